"""Memory-Augmented Neural Networks with Least Recently Used Access (Santoro et al., ICML 2016).

A MANN reads a task as a *sequence*: at time t it sees the image x_t together with the true label of the previous
time step, y_{t-1}, and must predict y_t. Nothing is fine-tuned at test time: what the network learns about a new
class lives in an external memory M [N slots, D], written and read by an LSTM controller with H heads. Per step:

    h_t, c_t = LSTM([x_t, onehot(y_{t-1}), r_{t-1}], h_{t-1}, c_{t-1})      controller
    k_t = tanh(W_k h_t),  alpha_t = W_alpha h_t                              a key [H, D] and a gate [H] per head
    a_t = tanh(W_a h_t)                                                      what is written [H, D] (written="add")
    w^w_t = sigmoid(alpha_t) w^r_{t-1} + (1 - sigmoid(alpha_t)) w^lu_{t-1}   write where it read last, or where unused
    M_t(i) = M_{t-1}(i) [i != argmin_j w^u_{t-1}(j)] + sum_h w^w_t,h(i) a_t,h   (the least used slot is erased first)
    w^r_t(i) = softmax_i( k_t . M_t(i) / (||k_t|| ||M_t(i)||) ),   r_t = sum_i w^r_t(i) M_t(i)           read
    w^u_t = gamma w^u_{t-1} + sum_h (w^r_t,h + w^w_t,h)                     usage, decaying with gamma
    w^lu_t(i) = 0 if w^u_t(i) > m(w^u_t, H) else 1                          the H least used slots (m: H-th smallest)
    p(y_t | x_1..t, y_1..t-1) = softmax(W_o [h_t, r_t])

Writing the *previous* read weights is what binds a label to an image: at t+1 the controller has just been told y_t,
and it writes into the slots it read for x_t. The paper writes the key itself (a_t = k_t, ``written="key"``); then the
read of the same step is drawn to the slots just filled with that very key, and the read vector echoes the key more
than it retrieves. By default the vector written is the NTM's separate *add vector* a_t (as in public
reimplementations of this paper); chapter 06 trains both and compares them. The sizes are the paper's (LSTM of 200
units, 128 x 40 memory, 4 heads, gamma 0.99). Ties in w^u are broken towards the lower slot index, so w^lu always has
exactly H ones (at the start every usage is 0). The baseline is the same controller without memory
(``memory=False``): an LSTM on [x_t, onehot(y_{t-1})].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn.core.episodes import ClassDataset, make_generator
from metalearn.core.evaluate import EvalResult, mean_ci95
from metalearn.core.train import RunOptions, Schedule, TrainResult, adam, train


# ---------------------------------------------------------------------------------------------------------------
# LRUA memory: the equations above, one function each. Shapes: batch B, heads H, slots N, slot size D.
# ---------------------------------------------------------------------------------------------------------------
def cosine_read_weights(keys: Tensor, memory: Tensor, eps: float = 1e-8) -> Tensor:
    """w^r(i) = softmax_i(cos(k, M(i))): ``keys [B, H, D]``, ``memory [B, N, D]`` -> ``[B, H, N]``."""
    sim = F.normalize(keys, dim=-1, eps=eps) @ F.normalize(memory, dim=-1, eps=eps).transpose(1, 2)
    return sim.softmax(-1)


def least_used(usage: Tensor, n: int) -> Tensor:
    """w^lu: 1 at the ``n`` slots of least usage, 0 elsewhere (ties to the lower index): ``[B, N]`` -> ``[B, N]``."""
    if not 1 <= n <= usage.shape[-1]:
        raise ValueError(f"n must be between 1 and the {usage.shape[-1]} slots, got {n}")
    idx = usage.argsort(dim=-1, stable=True)[..., :n]
    return torch.zeros_like(usage).scatter_(-1, idx, 1.0)


def write_weights(gate: Tensor, prev_read: Tensor, prev_least_used: Tensor) -> Tensor:
    """w^w = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}: ``gate`` (alpha) ``[B, H]``, ``prev_read``
    ``[B, H, N]``, ``prev_least_used [B, N]`` -> ``[B, H, N]``."""
    s = torch.sigmoid(gate)[..., None]
    return s * prev_read + (1 - s) * prev_least_used[:, None, :]


def write(memory: Tensor, weights: Tensor, vectors: Tensor, prev_usage: Tensor) -> Tensor:
    """M_t: the least used slot of ``prev_usage [B, N]`` erased, then every head's vector ``vectors [B, H, D]`` (a_t,
    or the key k_t) added with its ``weights [B, H, N]``: ``memory [B, N, D]`` -> ``[B, N, D]``."""
    erase = least_used(prev_usage, 1)
    return memory * (1 - erase)[..., None] + weights.transpose(1, 2) @ vectors


def update_usage(usage: Tensor, read: Tensor, written: Tensor, gamma: float) -> Tensor:
    """w^u_t = gamma w^u_{t-1} + sum over heads of w^r_t + w^w_t: ``[B, N]``, ``[B, H, N]``, ``[B, H, N]`` -> ``[B, N]``."""
    return gamma * usage + read.sum(1) + written.sum(1)


@dataclass
class MemoryState:
    """What a MANN carries from one time step to the next; :meth:`MANN.initial_state` starts every episode afresh."""

    h: Tensor  # controller output [B, hidden]
    c: Tensor  # controller cell [B, hidden]
    memory: Tensor  # M [B, N, D]
    read: Tensor  # w^r [B, H, N]
    usage: Tensor  # w^u [B, N]
    reads: Tensor  # r [B, H*D]

    def repeat(self, n: int) -> MemoryState:
        """Each episode's state copied ``n`` times (``[B, ...]`` -> ``[B*n, ...]``): one copy per query."""
        return MemoryState(*(t.repeat_interleave(n, 0) for t in vars(self).values()))


class MANN(nn.Module):
    """A MANN over flattened images of ``input_dim`` values and ``ways`` labels (or, ``memory=False``, the LSTM
    baseline). :meth:`sequence` runs Santoro et al.'s label-offset sequences; ``forward`` is the shared few-shot
    protocol (support set presented as a sequence, then each query), so the model joins the chapters' tables."""

    def __init__(self, input_dim: int, ways: int, hidden: int = 200, slots: int = 128, slot_size: int = 40,
                 heads: int = 4, gamma: float = 0.99, memory: bool = True, written: str = "add") -> None:
        super().__init__()
        if min(input_dim, ways, hidden, slots, slot_size, heads) < 1 or heads > slots or not 0 <= gamma <= 1:
            raise ValueError(f"need positive sizes, heads <= slots and 0 <= gamma <= 1, got input_dim={input_dim}, "
                             f"ways={ways}, hidden={hidden}, slots={slots}, slot_size={slot_size}, heads={heads}, "
                             f"gamma={gamma}")
        if written not in ("add", "key"):
            raise ValueError(f"written must be 'add' (a separate add vector) or 'key' (the read key, as the paper's "
                             f"equation), got {written!r}")
        self.input_dim, self.ways, self.hidden, self.memory, self.written = input_dim, ways, hidden, memory, written
        self.slots, self.slot_size, self.heads, self.gamma = slots, slot_size, heads, gamma
        reads = heads * slot_size if memory else 0
        self.controller = nn.LSTMCell(input_dim + ways + reads, hidden)
        if memory:
            self.key = nn.Linear(hidden, heads * slot_size)
            self.gate = nn.Linear(hidden, heads)
            if written == "add":
                self.add = nn.Linear(hidden, heads * slot_size)
        self.out = nn.Linear(hidden + reads, ways)

    def initial_state(self, batch: int) -> MemoryState:
        """The state before an episode's first step: zero controller and reads, every slot 1e-6 (so that a cosine is
        defined), no usage; w^r_0 = 0, so the first write goes to the H least used slots only."""
        z = next(self.parameters()).new_zeros
        reads = self.heads * self.slot_size if self.memory else 0
        return MemoryState(z(batch, self.hidden), z(batch, self.hidden),
                           z(batch, self.slots, self.slot_size) + 1e-6, z(batch, self.heads, self.slots),
                           z(batch, self.slots), z(batch, reads))

    def step(self, x: Tensor, prev_label: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState, dict[str, Tensor]]:
        """One time step: ``x [B, input_dim]``, ``prev_label [B, ways]`` (one-hot y_{t-1}, zeros at t = 0) ->
        logits ``[B, ways]``, the new state, and this step's read and write weights ``[B, H, N]`` (memory only)."""
        h, c = self.controller(torch.cat([x, prev_label, state.reads], -1), (state.h, state.c))
        if not self.memory:
            return self.out(h), MemoryState(h, c, state.memory, state.read, state.usage, state.reads), {}
        b = x.shape[0]
        keys = torch.tanh(self.key(h)).view(b, self.heads, self.slot_size)
        adds = keys if self.written == "key" else torch.tanh(self.add(h)).view(b, self.heads, self.slot_size)
        written = write_weights(self.gate(h), state.read, least_used(state.usage, self.heads))
        memory = write(state.memory, written, adds, state.usage)
        read = cosine_read_weights(keys, memory)
        reads = (read @ memory).flatten(1)
        usage = update_usage(state.usage, read, written, self.gamma)
        return (self.out(torch.cat([h, reads], -1)), MemoryState(h, c, memory, read, usage, reads),
                {"read": read, "write": written})

    def run(self, x: Tensor, labels: Tensor, state: MemoryState | None = None,
            trace: bool = False) -> tuple[Tensor, MemoryState, dict[str, Tensor]]:
        """Steps over ``x [B, T, input_dim]`` with true labels ``labels [B, T]`` (fed one step late) from ``state``
        (default: a fresh memory): logits ``[B, T, ways]``, the state after the last step (whose label has not been
        fed yet), and with ``trace`` the read and write weights ``[B, T, H, N]``."""
        b, t = labels.shape
        state = state or self.initial_state(b)
        onehot = F.one_hot(labels, self.ways).to(x.dtype)
        prev = torch.cat([x.new_zeros(b, 1, self.ways), onehot[:, :-1]], 1)
        logits, weights = [], []
        for i in range(t):
            out, state, w = self.step(x[:, i], prev[:, i], state)
            logits.append(out)
            weights.append(w)
        traced = {k: torch.stack([w[k] for w in weights], 1) for k in weights[0]} if trace and t else {}
        return torch.stack(logits, 1), state, traced

    def sequence(self, x: Tensor, labels: Tensor) -> Tensor:
        """Logits ``[B, T, ways]`` of label-offset sequences ``x [B, T, C, H, W]`` (or flat), ``labels [B, T]``,
        each sequence starting from a fresh memory."""
        return self.run(x.flatten(2), labels)[0]

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """The few-shot protocol: each task's support set ``[T, W*K, C, H, W]`` is presented as a sequence (round
        robin over the classes: every class's first shot, then every second shot, ...), then each query
        ``[T, W*Q, C, H, W]`` is one further step from that state, with the last support label as its y_{t-1}, so
        a query never sees another query: scores ``[T, W*Q, W]``."""
        if ways != self.ways:
            raise ValueError(f"this MANN predicts {self.ways} labels (its output layer), the episode has {ways} ways")
        t, n = support_y.shape
        order = support_y.argsort(dim=1, stable=True).view(t, ways, -1).transpose(1, 2).reshape(t, n)  # round robin
        sx = support_x.flatten(2).gather(1, order[..., None].expand(-1, -1, self.input_dim))
        sy = support_y.gather(1, order)
        _, state, _ = self.run(sx, sy)
        m = query_x.shape[1]
        last = F.one_hot(sy[:, -1], ways).to(sx.dtype).repeat_interleave(m, 0)
        logits, _, _ = self.step(query_x.flatten(2).flatten(0, 1), last, state.repeat(m))
        return logits.view(t, m, ways)


# ---------------------------------------------------------------------------------------------------------------
# Santoro et al.'s episodes: `ways` classes x `instances` images in a random order, labels assigned per episode
# ---------------------------------------------------------------------------------------------------------------
def sample_sequences(dataset: ClassDataset, ways: int, instances: int, tasks: int,
                     generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``tasks`` episodes of ``ways`` random classes (labels 0..ways-1 in a random class order) x ``instances``
    random images each, shuffled: images ``[tasks, ways*instances, C, H, W]`` in [0, 1], labels
    ``[tasks, ways*instances]``."""
    if min(ways, instances, tasks) < 1 or ways > dataset.num_classes or instances > dataset.per_class:
        raise ValueError(f"need 1 <= ways <= {dataset.num_classes} classes, 1 <= instances <= {dataset.per_class} "
                         f"images per class and tasks >= 1, got ways={ways}, instances={instances}, tasks={tasks}")
    dev = dataset.device
    classes = torch.rand(tasks, dataset.num_classes, generator=generator, device=dev).argsort(1)[:, :ways]
    examples = torch.rand(tasks, ways, dataset.per_class, generator=generator, device=dev).argsort(2)[..., :instances]
    x = dataset.images[classes[..., None], examples].flatten(1, 2)  # [tasks, ways*instances, C, H, W]
    y = torch.arange(ways, device=dev).repeat_interleave(instances).expand(tasks, -1)
    order = torch.rand(tasks, ways * instances, generator=generator, device=dev).argsort(1)
    x = x[torch.arange(tasks, device=dev)[:, None], order]
    return x.float().div_(255), y.gather(1, order)


def instance_numbers(labels: Tensor) -> Tensor:
    """How many times each step's label has been presented so far, itself included: ``[B, T]`` -> ``[B, T]`` (1 at
    a class's first presentation, 2 at its second, ...)."""
    onehot = F.one_hot(labels)
    return (onehot.cumsum(1) * onehot).sum(-1)


@dataclass(frozen=True)
class Sequences(Schedule):
    """Santoro et al.'s training: ``tasks`` label-offset sequences per step, each of ``model.ways`` classes x
    ``instances`` images (Adam, :class:`~metalearn.core.train.Schedule`)."""

    tasks: int = 16
    instances: int = 10


def train_mann(model: MANN, data: ClassDataset, steps: int, settings: Sequences, run: RunOptions) -> TrainResult:
    """Adam on ``steps`` batches of sequences of ``data``, minimising the cross-entropy of every step's prediction;
    logs as ``accuracy`` the training accuracy at the 2nd presentation of a class (Santoro et al.'s headline
    column)."""
    opt, scheduler = adam(model, steps, settings)

    def loss_fn(m: MANN, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        logits = m.sequence(x, y)
        second = instance_numbers(y) == 2
        acc = (logits.argmax(-1) == y)[second].float().mean().item() * 100
        return F.cross_entropy(logits.flatten(0, 1), y.flatten()), {"accuracy": acc}

    def batch_fn(step: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return sample_sequences(data, model.ways, settings.instances, settings.tasks, g)

    return train(model, loss_fn, batch_fn, steps, opt, run, scheduler,
                 examples=settings.tasks * model.ways * settings.instances)  # images in the batch's sequences


@torch.no_grad()
def instance_accuracy(model: MANN, data: ClassDataset, *, episodes: int, instances: int = 10,
                      report: tuple[int, ...] = (1, 2, 3, 4, 5, 10), seed: int = 0,
                      tasks_per_batch: int = 50) -> dict[int, EvalResult]:
    """Santoro et al.'s Table 1: accuracy at the n-th presentation of a class, for each n in ``report``, over
    ``episodes`` seeded sequences of ``data`` (each episode's accuracy at n is the mean over its classes), with
    the 95% CI over episodes."""
    if episodes < 2 or any(not 1 <= n <= instances for n in report):
        raise ValueError(f"need episodes >= 2 and instances to report within 1..{instances}, got {episodes}, {report}")
    model.eval()
    g = make_generator(seed, data.device)
    per_episode: dict[int, list[np.ndarray]] = {n: [] for n in report}
    for lo in range(0, episodes, tasks_per_batch):
        x, y = sample_sequences(data, model.ways, instances, min(tasks_per_batch, episodes - lo), g)
        correct = (model.sequence(x, y).argmax(-1) == y).float()
        inst = instance_numbers(y)
        for n in report:
            at_n = inst == n  # exactly `ways` steps per episode
            per_episode[n].append(((correct * at_n).sum(1) / at_n.sum(1)).cpu().numpy() * 100)
    out = {}
    for n, parts in per_episode.items():
        values = np.concatenate(parts)
        out[n] = EvalResult(*mean_ci95(values), episodes, values)
    return out


@dataclass(frozen=True)
class InstanceValidation:
    """Model selection for a MANN on Santoro et al.'s own metric: the accuracy at the ``instance``-th presentation of
    a class on ``episodes`` fixed sequences (seed ``seed``) of the *validation* classes ``data``, every ``every``
    steps. It has the interface of :class:`metalearn.core.evaluate.Validation`, so
    :func:`metalearn.study.experiment.fit` keys, logs and selects with it the same way."""

    data: ClassDataset
    episodes: int = 200
    every: int = 100
    instance: int = 2
    instances: int = 10
    seed: int = 1

    def __post_init__(self) -> None:
        if self.episodes < 2 or self.every < 1 or not 1 <= self.instance <= self.instances:
            raise ValueError(f"validation needs episodes >= 2, every >= 1 and 1 <= instance <= instances, got "
                             f"{self.episodes}, {self.every}, {self.instance}, {self.instances}")

    @property
    def predict(self) -> object:
        """The rule a check scores with (part of a trained model's key): :func:`instance_accuracy`."""
        return instance_accuracy

    def __call__(self, model: MANN) -> float:
        return instance_accuracy(model, self.data, episodes=self.episodes, instances=self.instances,
                                 report=(self.instance,), seed=self.seed)[self.instance].mean

    def describe(self) -> dict[str, object]:
        """What a trained model's key records of its selection."""
        return {"data": self.data.name, "contents": self.data.digest, "episodes": self.episodes, "every": self.every,
                "instance": self.instance, "instances": self.instances, "seed": self.seed,
                "predict": f"{__name__}.instance_accuracy"}


def downscale(dataset: ClassDataset, size: int) -> ClassDataset:
    """The images resized to ``size x size`` (antialiased bilinear; Santoro et al. use 20 x 20 Omniglot), uint8."""
    c, h, w = dataset.images.shape[2:]
    flat = dataset.images.flatten(0, 1).float()
    small = torch.cat([F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                       for chunk in flat.split(4096)])
    images = small.round().clamp(0, 255).to(torch.uint8).view(*dataset.images.shape[:2], c, size, size)
    return ClassDataset(images, dataset.class_names, f"{dataset.name}@{size}px")
