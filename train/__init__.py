"""Training job: MNIST IDX files -> LeNet-5 -> TorchScript and ONNX artifacts."""
