"""``python -m coreecho_jax.data.synthetic``: write a synthetic EchoNet-Dynamic dataset."""

from coreecho_jax.data.synthetic.echonet import main

main()
