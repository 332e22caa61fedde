"""Echocardiogram data: files in, clips out.

Wings, in the order data flows:

* :mod:`.video`    one video file -> uint8 frames: AVI/MP4/DICOM/MHD/NIfTI reading (``video_io``), DICOM
                   facts (``dicom``), the ultrasound sector (``sector``), is-it-an-echo-loop checks
                   (``echo_loop``), the ``Video`` record and errors (``video_types``). No TensorFlow.
* :mod:`.echonet`  EchoNet-Dynamic and anything in its layout: FileList.csv reader (``reader``), the
                   TFDS builder (``echonet_tfds``), the tf.data clip pipeline (``pipeline``), test clip
                   starts (``start_indexes``), the input bundle a run uses (``inputs``). The only wing
                   that imports TensorFlow.
* :mod:`.transfer` CAMUS and HMC-QU readers, cross-validation folds, a cardiac cycle -> one clip
                   (``cycles``). No TensorFlow.

On this floor: the official clip sampler (``clips``), EchoNet-Dynamic's layout facts
(``echonet_layout``), the EF-in-percent rule (``ef_labels``), what every reader shares (``records``),
and the synthetic datasets written in the real layouts (``synthetic``).
"""
