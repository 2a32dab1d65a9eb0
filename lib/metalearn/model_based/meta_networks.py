"""Meta Networks (Munkhdalai & Yu, ICML 2017): fast weights, generated from loss gradients, beside slow weights.

Two networks, each with *slow* weights (learned across tasks by the outer optimiser) and *fast* weights (generated
for the task at hand from loss gradients, the "meta information"):

* the base learner b (slow W, example-level fast W*) classifies;
* the representation function u (slow Q, task-level fast Q*) embeds, giving the keys of a memory.

For one task with support set {(x'_i, y'_i)}, i = 1..N, and queries x_j (Algorithm 1; the authors' code where it is
more specific):

    grad_t = d/dQ loss_emb(u(Q, S_t), y_t)   for T chunks S_t of the support set;   Q* = d(G, grad_1, ..., grad_T)
    grad_i = d/dW loss(b(W, x'_i), y'_i);   W*_i = m(Z, grad_i);   memory M_i = W*_i,   key R_i = u(Q, Q*, x'_i)
    r_j = u(Q, Q*, x_j);   a_j = softmax_i cos(R_i, r_j);   W*_j = sum_i a_ji M_i;   y_j ~ b(W, W*_j, x_j)

and the queries' cross-entropy trains W, Q, Z and G. The gradients are *inputs* to m and d, never differentiated
(first order, as the authors' code). m and d work coordinate-wise: every scalar weight's gradient, preprocessed to
[max(log|g| / p, -1), clip(e^p g, -1, 1)] (Andrychowicz et al. 2016; p = 7 in the authors' code), goes through the
same small network (m: an MLP 2-20-20-1; d: an LSTM of 20 units over the T gradients, then 20-1), one copy for the
convolution kernels and one for the linear layers.

Layer augmentation: an augmented hidden layer outputs ReLU(W h) + ReLU(W* h); b's output layer W h + W* h (then the
softmax); u's key layer Q h + Q* h (linear). u's classifier for loss_emb has slow weights only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from metalearn.core.episodes import Episode, EpisodeSampler
from metalearn.core.train import RunOptions, Schedule, TrainResult, lr_scheduler, train

Weights = dict[str, Tensor]


def preprocess_gradient(g: Tensor, p: float = 7.0) -> Tensor:
    """Andrychowicz et al.'s gradient preprocessing: ``[...]`` -> ``[..., 2]``, (max(log|g| / p, -1),
    clip(e^p g, -1, 1)): the magnitude on a log scale and the sign, both in [-1, 1] for small gradients."""
    eps = torch.finfo(g.dtype).eps
    return torch.stack([((g.abs() + eps).log() / p).clamp(min=-1.0), (g * math.exp(p)).clamp(-1.0, 1.0)], -1)


class CoordinateMLP(nn.Module):
    """m: every scalar gradient to one fast weight, ``[..., P]`` -> ``[..., P]`` (an MLP 2-h-h-1 per coordinate)."""

    def __init__(self, hidden: int = 20, p: float = 7.0) -> None:
        super().__init__()
        self.p = p
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, g: Tensor) -> Tensor:
        return self.net(preprocess_gradient(g, self.p)).squeeze(-1)


class CoordinateLSTM(nn.Module):
    """d: a sequence of T gradients of every coordinate to one fast weight, ``[T, ...]`` -> ``[...]`` (an LSTM over
    the T steps, its last output through a linear layer; the order does not matter to the method, but the LSTM reads
    the chunks in the support set's order)."""

    def __init__(self, hidden: int = 20, p: float = 7.0) -> None:
        super().__init__()
        self.p = p
        self.lstm = nn.LSTM(2, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, grads: Tensor) -> Tensor:
        steps = len(grads)
        h, _ = self.lstm(preprocess_gradient(grads, self.p).view(steps, -1, 2))  # [T, every coordinate, hidden]
        return self.out(h[-1]).view(grads.shape[1:])


class FastWeightNet(nn.Module):
    """A CNN of ``blocks`` blocks [conv 3x3 (no bias) -> ReLU -> max-pool 2x2, ceil] and linear layers (no bias) to
    ``linear`` sizes, whose slow weights are parameters named ``conv<i>`` and ``fc<j>``; the layers named in
    ``augmented`` also take fast weights (layer augmentation). ``[B, C, H, W]`` -> ``[B, linear[-1]]``."""

    def __init__(self, in_channels: int, hidden: int, blocks: int, linear: Sequence[int], augmented: Sequence[str],
                 last_relu: bool = False) -> None:
        super().__init__()
        self.blocks, self.last_relu = blocks, last_relu
        weights = {f"conv{i}": torch.empty(hidden, in_channels if i == 0 else hidden, 3, 3) for i in range(blocks)}
        dims = [hidden, *linear]
        weights |= {f"fc{j}": torch.empty(dims[j + 1], dims[j]) for j in range(len(linear))}
        for w in weights.values():
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # torch's default for conv and linear layers
        self.weights = nn.ParameterDict({k: nn.Parameter(w) for k, w in weights.items()})
        unknown = sorted(set(augmented) - set(weights))
        if unknown:
            raise ValueError(f"augmented layers {unknown} are not layers of this network ({', '.join(weights)})")
        self.augmented = tuple(k for k in weights if k in augmented)
        self.fc = len(linear)

    def slow(self) -> Weights:
        return dict(self.weights)

    def forward(self, x: Tensor, fast: Weights | None = None, slow: Weights | None = None,
                record: dict[str, tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """The network with ``slow`` weights (default: its parameters) and, where given, ``fast`` ones; ``record``
        (a dict) receives each layer's input and slow pre-activation, ``{layer: (h, W h)}``."""
        w, fast = slow or self.slow(), fast or {}
        h = x
        for i in range(self.blocks):
            k = f"conv{i}"
            a = F.conv2d(h, w[k], padding=1)
            if record is not None:
                record[k] = (h, a)
            out = F.relu(a)
            if k in fast:
                out = out + F.relu(F.conv2d(h, fast[k], padding=1))
            h = F.max_pool2d(out, 2, ceil_mode=True)
        h = h.flatten(1)
        for j in range(self.fc):
            k, linear = f"fc{j}", j < self.fc - 1 or self.last_relu
            a = h @ w[k].T
            if record is not None:
                record[k] = (h, a)
            if k in fast:
                b = h @ fast[k].T
                h = F.relu(a) + F.relu(b) if linear else a + b
            else:
                h = F.relu(a) if linear else a
        return h

    def example_gradients(self, x: Tensor, y: Tensor, head: Tensor | None = None) -> Weights:
        """grad_i = d/dW CE(f(W, x_i) [@ head^T], y_i), each example's loss alone, for the augmented layers, the
        slow weights (and ``head``) as constants: ``x [n, C, H, W]``, ``y [n]`` -> ``{layer: [n, *shape]}``.

        One batched forward and backward, not n: the examples do not interact (no BatchNorm), so the gradient of
        the summed loss with respect to example i's pre-activation a_i = W h_i is d loss_i / d a_i, and the weight
        gradient of example i alone is its outer product with the layer input h_i (a convolution's: with the 3x3
        patches of h_i, ``unfold``)."""
        slow = {k: v.detach().requires_grad_() for k, v in self.slow().items()}
        record: dict[str, tuple[Tensor, Tensor]] = {}
        with torch.enable_grad():
            out = self.forward(x, slow=slow, record=record)
            logits = out if head is None else out @ head.detach().T
            loss = F.cross_entropy(logits, y, reduction="sum")
            outs = torch.autograd.grad(loss, [record[k][1] for k in self.augmented])
        grads = {}
        for k, g in zip(self.augmented, outs, strict=True):
            h = record[k][0].detach()
            if k.startswith("conv"):
                patches = F.unfold(h, 3, padding=1)  # [n, C_in*9, H*W]
                grads[k] = torch.einsum("nop,nkp->nok", g.flatten(2), patches).view(-1, *slow[k].shape)
            else:
                grads[k] = g[:, :, None] * h[:, None, :]
        return grads


def _groups(names: Sequence[str]) -> dict[str, list[str]]:
    """The augmented layers by generator copy: convolution kernels and linear weights."""
    return {g: [n for n in names if n.startswith(g)] for g in ("conv", "fc") if any(n.startswith(g) for n in names)}


class MetaNetwork(nn.Module):
    """Meta Networks for ``ways``-way tasks on images ``[C, H, W]``: b and u are separate CNNs of ``blocks`` blocks
    of ``hidden`` filters (the authors' Omniglot model: 5 blocks of 64, then linear 64 -> 64 -> ways for b and
    64 -> 64 (the key) for u); the top ``augmented_blocks`` blocks and every linear layer are augmented. The few-shot
    protocol: ``support_x [T, W*K, C, H, W]``, ``support_y [T, W*K]``, ``query_x [T, W*Q, C, H, W]`` -> logits
    ``[T, W*Q, W]``; any number of shots (the memory has a slot per support example)."""

    def __init__(self, in_channels: int, ways: int, hidden: int = 64, blocks: int = 5, augmented_blocks: int = 5,
                 chunks: int = 5, controller_hidden: int = 20, p: float = 7.0) -> None:
        super().__init__()
        if not 0 <= augmented_blocks <= blocks or chunks < 1 or ways < 2:
            raise ValueError(f"need 0 <= augmented_blocks <= blocks, chunks >= 1 and ways >= 2, got "
                             f"augmented_blocks={augmented_blocks}, blocks={blocks}, chunks={chunks}, ways={ways}")
        self.ways, self.chunks = ways, chunks
        convs = [f"conv{i}" for i in range(blocks - augmented_blocks, blocks)]
        self.base = FastWeightNet(in_channels, hidden, blocks, [hidden, ways], [*convs, "fc0", "fc1"])
        self.rep = FastWeightNet(in_channels, hidden, blocks, [hidden], [*convs, "fc0"])
        self.rep_head = nn.Linear(hidden, ways, bias=False)  # u's classifier for loss_emb (slow weights only)
        self.m = nn.ModuleDict({g: CoordinateMLP(controller_hidden, p) for g in _groups(self.base.augmented)})
        self.d = nn.ModuleDict({g: CoordinateLSTM(controller_hidden, p) for g in _groups(self.rep.augmented)})

    @staticmethod
    def _generate(generator: nn.ModuleDict, grads: Weights, names: Sequence[str], lead: int) -> Weights:
        """Each augmented layer's fast weights from its gradients ``[*lead_dims, *shape]`` through its group's
        coordinate-wise generator (``lead`` leading dimensions are kept apart: examples, or the T chunks)."""
        fast = {}
        for group, layers in _groups(names).items():
            flat = torch.cat([grads[n].flatten(lead) for n in layers], -1)
            out = generator[group](flat)
            sizes = [grads[n][(0,) * lead].numel() for n in layers]
            for n, part in zip(layers, out.split(sizes, -1), strict=True):
                fast[n] = part.reshape(*part.shape[:-1], *grads[n].shape[lead:])
        return fast

    def task_fast_weights(self, support_x: Tensor, support_y: Tensor) -> Weights:
        """Q* = d(G, grad_1..grad_T): u's loss_emb (its classifier's cross-entropy) on T chunks of a task's support
        set ``[*tasks, n, C, H, W]``, ``[*tasks, n]`` (in its order; fewer chunks if n < T), differentiated w.r.t. u's
        augmented slow weights as constants: ``{layer: [*tasks, *shape]}`` (no leading dimension: one task)."""
        names, tasks, n = self.rep.augmented, support_y.shape[:-1], support_y.shape[-1]
        chunks = min(self.chunks, n)
        per_example = self.rep.example_gradients(support_x.reshape(-1, *support_x.shape[-3:]), support_y.reshape(-1),
                                                 self.rep_head.weight)
        # a chunk's mean cross-entropy has the mean of its examples' gradients: [T, *tasks, *shape]
        grads = {k: torch.stack([c.mean(len(tasks)) for c in g.view(*tasks, n, *g.shape[1:]).tensor_split(
            chunks, len(tasks))]) for k, g in per_example.items()}
        return self._generate(self.d, grads, names, 1 + len(tasks))

    def example_fast_weights(self, support_x: Tensor, support_y: Tensor) -> Weights:
        """The memory M: W*_i = m(Z, grad_i) for each support example ``[*tasks, n, C, H, W]``, grad_i of b's
        cross-entropy on that example alone w.r.t. b's augmented slow weights (as constants): ``{layer: [*tasks, n,
        *shape]}``."""
        grads = self.base.example_gradients(support_x.reshape(-1, *support_x.shape[-3:]), support_y.reshape(-1))
        fast = self._generate(self.m, grads, self.base.augmented, 1)
        return {k: v.view(*support_y.shape, *v.shape[1:]) for k, v in fast.items()}

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """Every task of the batch at once: ``[T, n, C, H, W]``, ``[T, n]``, ``[T, m, C, H, W]`` -> logits
        ``[T, m, ways]`` (each task's fast weights apart; each query's W*_j apart)."""
        if ways != self.ways:
            raise ValueError(f"this Meta Network's output layer has {self.ways} classes, the episode has {ways} ways")
        q_fast = self.task_fast_weights(support_x, support_y)  # Q* [T, *shape]
        memory = self.example_fast_weights(support_x, support_y)  # M [T, n, *shape]
        embed = vmap(lambda x, f: self.rep(x, f))  # u with each task's own Q*
        keys, r = embed(support_x, q_fast), embed(query_x, q_fast)  # R [T, n, D], r [T, m, D]
        a = (F.normalize(r, dim=-1) @ F.normalize(keys, dim=-1).transpose(1, 2)).softmax(-1)  # [T, m, n]
        fast = {k: torch.einsum("tmn,tn...->tm...", a, v).flatten(0, 1) for k, v in memory.items()}  # W*_j
        logits = vmap(lambda x, f: self.base(x[None], f)[0])(query_x.flatten(0, 1), fast)
        return logits.view(*query_x.shape[:2], -1)


class ClippedAdam(torch.optim.Adam):
    """Adam on gradients whose global norm is first clipped to ``max_norm`` (the authors' code: 10)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, max_norm: float) -> None:
        params = list(params)
        super().__init__(params, lr=lr)
        self.max_norm = max_norm

    def step(self, closure: object = None) -> None:  # type: ignore[override]
        nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], self.max_norm)
        super().step()


def rotate_classes(episode: Episode, generator: torch.Generator) -> Episode:
    """The authors' Omniglot augmentation: each task's every class rotated by a random multiple of 90 degrees, the
    same for its support and query images (training episodes only)."""
    t, ways = episode.classes.shape
    turns = torch.randint(0, 4, (t, ways), generator=generator, device=episode.classes.device)

    def rotate(x: Tensor, y: Tensor) -> Tensor:
        k = turns.gather(1, y)  # [t, n]: each image's class rotation
        out = x
        for r in (1, 2, 3):
            out = torch.where((k == r)[..., None, None, None], x.rot90(r, (-2, -1)), out)
        return out

    return Episode(rotate(episode.support_x, episode.support_y), episode.support_y,
                   rotate(episode.query_x, episode.query_y), episode.query_y, episode.classes)


@dataclass(frozen=True)
class MetaNetTraining(Schedule):
    """The authors' recipe: Adam with the gradient norm clipped to ``max_norm``, ``tasks`` episodes per step (1 in
    the authors' code); ``rotate``: :func:`rotate_classes` on every episode."""

    tasks: int = 1
    max_norm: float = 10.0
    rotate: bool = False


def train_metanet(model: MetaNetwork, sampler: EpisodeSampler, steps: int, settings: MetaNetTraining,
                  run: RunOptions) -> TrainResult:
    """``steps`` steps of the authors' recipe (:class:`MetaNetTraining`), the queries' cross-entropy summed."""
    opt = ClippedAdam(model.parameters(), settings.lr, settings.max_norm)
    scheduler = lr_scheduler(opt, steps, settings.halve_lr_every, settings.cosine)

    def loss_fn(m: MetaNetwork, ep: Episode) -> tuple[Tensor, dict[str, float]]:
        logits = m(ep.support_x, ep.support_y, ep.query_x, m.ways)
        acc = (logits.argmax(-1) == ep.query_y).float().mean().item() * 100
        return F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten(), reduction="sum") / len(logits), {
            "accuracy": acc}

    def batch_fn(step: int, g: torch.Generator) -> Episode:
        ep = sampler.sample(settings.tasks, g)
        return rotate_classes(ep, g) if settings.rotate else ep

    return train(model, loss_fn, batch_fn, steps, opt, run, scheduler,
                 examples=settings.tasks * sampler.examples_per_task)
