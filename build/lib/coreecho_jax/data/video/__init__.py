"""One video file -> uint8 frames ``[T, H, W]`` or ``[T, H, W, 3]``: readers for AVI/MP4/DICOM/MHD/NIfTI,
DICOM facts, ultrasound-sector cropping and echo-loop checks. Imports no TensorFlow (the prediction path
reads videos through this wing)."""
