"""A first diffusion model: a tiny DDPM on the embedded 8x8 digits, scored by its variational bound.

    python examples/diffusion_digits.py            # about a minute on 2 CPU cores; writes runs/diffusion-example

The bound on -log p(x) is a true discrete likelihood (the images are on 256 levels), so it reads as
bits per dimension; the sampled-t estimate is unbiased for the full T-term sum and comes with its
standard error.
"""

from variational import diffusion

run = diffusion.train(diffusion.DiffusionConfig(dataset="digits8", epochs=40), out="runs/diffusion-example")
model = diffusion.load(run.dir)  # the EMA weights

print(model.nll(run.data.x_test, t_samples=10))  # 10 network calls per image instead of T = 1000
images = model.sample(16, steps=50, sampler="ddim")  # DDIM in 50 steps
print("samples:", tuple(images.shape), "in", run.dir / "samples.png", "and", run.dir / "denoising.png")
