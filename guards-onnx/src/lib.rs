//! ML guards on ONNX Runtime (`ort`): filled in by the onnx backend issue.
