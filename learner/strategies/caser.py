"""Caser (Tang and Wang, WSDM 2018, "Personalized Top-N Sequential Recommendation via
Convolutional Sequence Embedding").

The last L item embeddings form an L x d "image". Horizontal filters of heights 1..L
(n_h each, max-pooled over time) catch union-level patterns, vertical filters (n_v, L x 1)
weighted sums of the L rows; their outputs, after dropout, pass a fully connected layer to
z (d wide), which is concatenated with the user's embedding P_u. An item's score is
<[z; P_u], W'_i> + b'_i, trained with BCE on the next T items and sampled negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from learner.adam import Adam
from learner.sequences import PAD, embed, lookup
from learner.strategies.base import register
from learner.strategies.sequential import SequenceConfig, SequenceNet, SequenceStrategy
from learner.train_spec import TrainSpec
from replay_data.typed_config import not_allowed


@dataclass(frozen=True)
class CaserConfig(SequenceConfig):
    # The paper's defaults (section 4): L = 5, T = 3, n_h = 16, n_v = 4, dropout 0.5,
    # Adam with lr 1e-3 and l2 1e-6, 3 negatives per target. d is the run's MF dim
    # (learner.model.dim), not the paper's 50: the user and input item embeddings then
    # start from the pretrained base MF, and new ids enter with the run's initial rows as
    # they are. Batch and epochs are ours: a retrain warm-started every period needs far
    # fewer passes than training from scratch. L is `window` (SequenceConfig, 5)
    targets: int = 3  # T
    horizontal: int = 16  # n_h, filters per height 1..L
    vertical: int = 4  # n_v
    dropout: float = 0.5
    negatives: int = 3  # per target
    train: TrainSpec = TrainSpec(lr=1e-3, batch=256, epochs=2, l2=1e-6)

    def validate(self) -> None:
        super().validate()
        for key in ("targets", "horizontal", "vertical", "negatives"):
            if getattr(self, key) < 1:
                raise not_allowed(key, getattr(self, key), f"{key} must be >= 1")
        if not 0 <= self.dropout < 1:
            raise not_allowed("dropout", self.dropout, "dropout must be in [0, 1)")


class CaserNet(SequenceNet):
    def __init__(
        self, users: torch.Tensor, items: torch.Tensor, widen: torch.Tensor, cfg: CaserConfig, sparse: bool
    ) -> None:
        super().__init__()
        dim, window = items.shape[1], cfg.window
        # sparse gradients for the user and input item tables, where learner.adam.Adam steps
        # them (the CPU): the same result without a dense gradient allocated at every step
        self.sparse = sparse
        self.users = torch.nn.Parameter(users)
        self.item_in = torch.nn.Parameter(items)
        self.horizontal = torch.nn.ModuleList(
            torch.nn.Conv2d(1, cfg.horizontal, (height, dim)) for height in range(1, window + 1)
        )
        self.vertical = torch.nn.Conv2d(1, cfg.vertical, (window, 1))
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.fc = torch.nn.Linear(cfg.vertical * dim + cfg.horizontal * window, dim)
        self.out = torch.nn.Parameter(items @ widen)  # W', 2d wide: z and P_u
        self.bias = torch.nn.Parameter(items.new_zeros(len(items)))

    def user_tables(self) -> list[torch.nn.Parameter]:
        return [self.users]

    def encode(self, users: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        image = embed(self.item_in, windows, self.sparse).unsqueeze(1)  # (B, 1, L, d); PAD slots are zero rows
        vertical = self.vertical(image).flatten(1)
        horizontal = [functional.relu(conv(image)).squeeze(3).amax(2) for conv in self.horizontal]
        z = functional.relu(self.fc(self.dropout(torch.cat([vertical, *horizontal], 1))))
        return torch.cat([z, lookup(self.users, users, self.sparse)], 1)


@register
class Caser(SequenceStrategy):
    name = "caser"
    config = CaserConfig
    cfg: CaserConfig

    @property
    def target_offsets(self) -> np.ndarray:  # the event's item and the T-1 after it
        return np.arange(self.cfg.targets)

    @property
    def negatives_per_target(self) -> int:
        return self.cfg.negatives

    def out_width(self, dim: int) -> int:
        return 2 * dim

    def build(self, users: torch.Tensor, items: torch.Tensor, widen: torch.Tensor) -> CaserNet:
        return CaserNet(users, items, widen, self.cfg, sparse=self.shared.device.type == "cpu")

    def optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        # torch's Adam to the bit, in a fraction of its passes over the embedding tables
        return Adam(params, lr=self.cfg.train.lr, weight_decay=self.cfg.train.l2)

    def loss(self, encoded: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
        """The paper's BCE: -log σ(y) over the targets the user has, -log(1 - σ(y)) over
        their negatives, summed per row and averaged over the batch."""
        present = targets != PAD
        positive = self.net.score(encoded, targets.clamp_min(0))
        negative = self.net.score(encoded, negatives).view(*targets.shape, -1)
        terms = functional.softplus(-positive) + functional.softplus(negative).sum(2)
        return (terms * present).sum(1).mean()
