"""EchoNet-Dynamic (and anything in its layout): ``FileList.csv`` + ``Videos/`` read (``reader``),
prepared once into a TFDS dataset (``echonet_tfds``), cut into clips by tf.data (``pipeline``) at the
official test starts (``start_indexes``), bundled for a run (``inputs``). The one wing that imports
TensorFlow; this ``__init__`` imports nothing, so ``coreecho_jax.data.echonet.reader`` stays light."""
