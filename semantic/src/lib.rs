//! featherguard-semantic: embedding guards over the core `Embedder` trait (similarity bank, classifier head, topic fence).
