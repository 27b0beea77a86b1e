"""Train the texts' reference VAE on the embedded digits, then sample and score it from Python.

python examples/vae_digits.py          # writes runs/example-digits (replaced on each run)
"""

import shutil

import torch

from variational import vae

out = "runs/example-digits"
shutil.rmtree(out, ignore_errors=True)  # an example: start afresh each time
run = vae.train(vae.VAEConfig(preset="reference", dataset="digits", epochs=20), out=out)
model = vae.load(run.dir)

x = run.data.x_test[:100]
torch.set_grad_enabled(False)  # evaluation only from here on
q = model.encode(x)  # a Normal over z for each image
print("latent means", tuple(q.mean.shape), "sds", tuple(q.stddev.shape))
print("ELBO per image", model.elbo(x).mean().item())
print("log p(x), K=1000", model.log_likelihood(x, k=1000).mean().item())
images = model.sample(16, generator=torch.Generator().manual_seed(0))  # (16, 28, 28) in [0, 1]
print("samples", tuple(images.shape))
