"""Using a trained run: ``predict`` on image files and ``export`` to ONNX."""
