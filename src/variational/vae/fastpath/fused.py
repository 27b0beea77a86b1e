"""The training loss of an MLP VAE with a Bernoulli decoder and its gradient, written out by hand.

This is the texts' reference model (784-400-20, ReLU, sigmoid/BCE output) and every other MLP with
a Bernoulli decoder. Autograd records about thirty nodes for its per-image ELBO at one draw
z = mu + sigma * eps; here the forward keeps the activations it needs (ReLUs applied in place), and
the backward forms the decoder's error signal x - sigmoid(logits) from the forward's sigmoid and
runs the layers' products in reverse, writing the gradient straight into the parameters' `.grad`
buffers, kept from step to step. Same function, same gradients as autograd through the generic
modules: tests/vae/test_fused.py checks them in float64 and in float32. There is no autograd node
here: `VAE.elbo` stays autograd's (differentiable twice), and only the trainer's step comes here,
through `variational.vae.fastpath.training_step`. docs/design/cpu-fast-path.md says what it saves.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules import module as module_hooks

from variational.vae.likelihoods import BernoulliLikelihood
from variational.vae.nets import MLPDecoder, MLPEncoder


class MLPLayers:
    """The linear layers of an MLP encoder (hidden layers, then the (mu, log sigma^2) head) and decoder."""

    def __init__(self, encoder: list[nn.Linear], decoder: list[nn.Linear], tensors: list[Tensor]):
        self.encoder, self.decoder, self._tensors = encoder, decoder, tensors

    def tensors(self) -> list[Tensor]:
        """Each layer's weight and bias, encoder first."""
        return self._tensors


def layers_of(encoder: nn.Module, decoder: nn.Module, likelihood: nn.Module) -> MLPLayers | None:
    """The linear layers when the three modules are exactly our MLP encoder, MLP decoder and
    Bernoulli likelihood, unhooked and unparametrised, in float32 or float64; else None.

    Checked on every step: exact types, so a parametrised layer (weight norm, pruning: torch swaps
    in a subclass) or any module of the user's fails them,
    and each net's layers must still be Linear, ReLU, Linear, ..., Linear, so a ReLU swapped for an
    Identity fails too.
    """
    if (type(encoder), type(decoder), type(likelihood)) != (MLPEncoder, MLPDecoder, BernoulliLikelihood):
        return None
    if _hooked(likelihood) or any(_GLOBAL_HOOKS):
        return None
    encoder_layers, decoder_layers = _linear_chain(encoder), _linear_chain(decoder)
    if encoder_layers is None or decoder_layers is None:
        return None
    tensors = []
    for layer in (*encoder_layers, *decoder_layers):
        weight, bias = layer._parameters.get("weight"), layer._parameters.get("bias")
        # Half precision would underflow _sum_of_logs's chunk products (2^-64 is below float16's range).
        if weight is None or bias is None or weight.dtype not in _DTYPES or bias.dtype != weight.dtype:
            return None
        tensors += (weight, bias)
    if any(t.dtype != tensors[0].dtype for t in tensors):
        return None
    return MLPLayers(encoder_layers, decoder_layers, tensors)


_CONTAINERS = frozenset((MLPEncoder, MLPDecoder, nn.Sequential))  # run their children in order
_LEAVES = frozenset((nn.Linear, nn.ReLU, nn.Identity))
_DTYPES = (torch.float32, torch.float64)
# Hooks registered for every module (torch.nn.modules.module.register_module_forward_hook and kin).
_GLOBAL_HOOKS = (
    module_hooks._global_forward_hooks,
    module_hooks._global_forward_pre_hooks,
    module_hooks._global_backward_hooks,
    module_hooks._global_backward_pre_hooks,
)


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _linear_chain(net: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of `net`, if its modules are all plain and unhooked and its leaves run
    Linear, ReLU, Linear, ..., Linear in registration order (Identity aside); else None."""
    stack, leaves = [net], []
    while stack:  # depth first, children in registration order: the order Sequential runs them in
        m = stack.pop()
        if _hooked(m):
            return None
        if type(m) in _CONTAINERS:
            stack.extend(c for c in reversed(m._modules.values()) if c is not None)
        elif type(m) not in _LEAVES or m._modules:  # a Linear with a submodule would ignore it
            return None
        elif type(m) is not nn.Identity:
            leaves.append(m)
    linears, relus = leaves[0::2], leaves[1::2]
    if (
        len(leaves) % 2 == 0
        or any(type(m) is not nn.Linear for m in linears)
        or any(type(m) is not nn.ReLU for m in relus)
    ):
        return None
    return linears


def loss_and_gradients(layers: MLPLayers, x: Tensor, eps: Tensor, beta: float = 1.0) -> float:
    """The training loss -mean(ELBO) over the batch; its gradient is written into each parameter's `.grad`.

    Without autograd: the gradient goes straight into buffers kept from step to step (allocated
    on the first call), so a step allocates no parameter-sized tensors and its weight-gradient
    products write into memory already in cache. Frozen parameters get no gradient (`.grad` None).
    Only the batch's total is formed, not each image's ELBO, and the backward runs for a unit
    upstream gradient with the loss's -1/batch folded into the weight-gradient products' scale.
    """
    params = layers.tensors()
    grads = []
    for p in params:
        if not p.requires_grad:
            p.grad = None  # frozen, perhaps since the last step: the optimiser must skip it
        elif p.grad is None or p.grad.shape != p.shape or p.grad.dtype != p.dtype or p.grad.is_inference():
            p.grad = torch.empty_like(p)  # an ordinary tensor (made outside inference mode), as autograd's are
        grads.append(p.grad)
    # Inference mode, not just no_grad: its tensors skip view and version tracking, a visible share
    # of a small model's step (docs/design/cpu-fast-path.md). Only the step's own temporaries are
    # inference tensors; the .grad buffers are written in place.
    with torch.inference_mode():
        n_encoder = len(layers.encoder)
        saved = _network(x, eps, n_encoder, params)
        probs, mu, logvar, _, sm1, logits, _ = saved
        # log Bernoulli(x | sigmoid(l)) = x l - softplus(l) = x l - relu(l) + log sigmoid(|l|), where
        # sigmoid(|l|) = max(p, 1 - p) lies in [1/2, 1]: no softplus pass (PyTorch's is not vectorised).
        # The batch's sums of those terms and of the KL's; x l as one dot product, which writes nothing.
        terms = torch.stack(
            [
                torch.dot(x.reshape(-1), logits.view(-1)),
                logits.clamp_min(0).sum(),
                _log_sigmoid_abs_sum(probs),
                _twice_kl_terms(mu, logvar, sm1).sum(),
            ]
        )
        _backward(saved, params[0::2], n_encoder, beta, grads, scale=-1.0 / x.shape[0])
    x_logits, relu_logits, log_max, kl2 = terms.tolist()
    elbo = x_logits - relu_logits + log_max - 0.5 * beta * kl2
    return -elbo / x.shape[0]


def _network(x: Tensor, eps: Tensor, n_encoder: int, params: list[Tensor] | tuple[Tensor, ...]):
    """The MLP's pass at z = mu + std * eps, keeping what the ELBO and its backward need:
    (sigmoid(logits), mu, log sigma^2, std * eps, std^2 - 1, logits, every layer's input)."""
    weights, biases = params[0::2], params[1::2]
    inputs = []  # every layer's input, for its weight gradient and its ReLU mask
    h = x
    for w, b in zip(weights[: n_encoder - 1], biases[: n_encoder - 1]):
        inputs.append(h)
        h = F.linear(h, w, b).clamp_min_(0)
    inputs.append(h)
    mu, logvar = F.linear(h, weights[n_encoder - 1], biases[n_encoder - 1]).chunk(2, dim=1)
    noise = logvar.mul(0.5).exp_().mul_(eps)  # std * eps
    h = torch.add(mu, noise)
    last = len(weights) - 1
    for i in range(n_encoder, last):
        inputs.append(h)
        h = F.linear(h, weights[i], biases[i]).clamp_min_(0)
    inputs.append(h)
    logits = F.linear(h, weights[last], biases[last])
    # sigmoid(logits) is also the backward's error signal x - sigmoid(logits); std^2 - 1 as expm1,
    # exact where std is near 1 (KL's std^2 - 1 - log std^2 cancels there)
    return torch.sigmoid(logits), mu, logvar, noise, torch.expm1(logvar), logits, inputs


def _log_sigmoid_abs_sum(probs: Tensor) -> Tensor:
    """The sum over all of `probs` of log sigmoid(|l|) = log max(p, 1 - p)."""
    return _sum_of_logs(torch.maximum(probs, torch.rsub(probs, 1)), total=True)


def _twice_kl_terms(mu: Tensor, logvar: Tensor, sm1: Tensor) -> Tensor:
    """mu^2 + std^2 - 1 - log std^2 per coordinate: their sum is 2 KL(N(mu, std^2) || N(0, I))."""
    return torch.sub(sm1, logvar).addcmul_(mu, mu)


def _sum_of_logs(a: Tensor, total: bool = False) -> Tensor:
    """sum(log a) over the last dim (over all of `a` with `total`), for a in [1/2, 1], as the log of
    products over chunks.

    A chunk of at most 64 such factors stays above 2^-64, far from float32's underflow, and its rounding
    error (about 64 ulps) is that of a sum of 64 logs; one log per chunk instead of per pixel.
    """
    rows, n = a.shape
    chunk = next((c for c in range(64, 15, -1) if n % c == 0), None)
    if chunk is None:  # no divisor to chunk by: pad with ones, which add log 1 = 0
        chunk = 64
        a = F.pad(a, (0, -n % chunk), value=1.0)
    logs = a.view(rows, a.shape[1] // chunk, chunk).prod(-1).log_()
    return logs.sum() if total else logs.sum(1)


def _backward(saved, weights, n_encoder: int, beta: float, grads: list[Tensor | None], scale: float) -> None:
    """`scale` times the gradient of the batch's summed ELBO with respect to each layer's weight and
    bias, written into the tensors of `grads` (None: not wanted)."""
    probs, mu, _, noise, sm1, _, inputs = saved
    x, n_layers = inputs[0], len(weights)
    ones = x.new_ones(x.shape[0])

    def through(i: int, delta: Tensor, relu_below: bool) -> Tensor | None:
        """Layer i's weight and bias gradients from its output gradient; returns its input's."""
        w, b, delta_t = 2 * i, 2 * i + 1, delta.t()
        if grads[w] is not None:
            grads[w].addmm_(delta_t, inputs[i], beta=0, alpha=scale)
        if grads[b] is not None:  # a product with ones, not sum(): the scale costs no pass of its own
            grads[b].addmv_(delta_t, ones, beta=0, alpha=scale)
        if i == 0:
            return None  # the images need no gradient
        below = torch.mm(delta, weights[i])
        # ReLU's gradient: zero where its output was (one pass, as autograd does it)
        return torch.ops.aten.threshold_backward(below, inputs[i], 0) if relu_below else below

    # d/dlogits of x l - softplus(l) is x - sigmoid(l)
    delta = torch.sub(x, probs)
    for i in range(n_layers - 1, n_encoder - 1, -1):
        delta = through(i, delta, relu_below=i > n_encoder)
    # z = mu + std * eps with std = exp(logvar / 2); the ELBO's KL term is -beta/2 sum(mu^2 + std^2 - 1 - logvar)
    d_mu = torch.sub(delta, mu, alpha=beta)
    d_kl = torch.mul(sm1, -0.5 * beta)
    delta = torch.cat([d_mu, d_kl.addcmul_(delta, noise, value=0.5)], 1)  # d/dlogvar: std eps / 2 per dz
    for i in range(n_encoder - 1, -1, -1):
        delta = through(i, delta, relu_below=True)
