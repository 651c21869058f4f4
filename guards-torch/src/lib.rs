//! ML guards on libtorch (`tch`): filled in by the torch backend issue.
