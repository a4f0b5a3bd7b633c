"""Fitting and evaluating LeNet-5 on in-memory tensors.

The whole data set lives in one tensor; batches are index slices of a seeded permutation, which
is both the fastest option on a 2-core CPU (no worker processes) and exactly reproducible.
While the model trains on one chunk of augmented images, a helper thread augments the next one
(torch releases the GIL), so a second core does the augmentation without torch's intra-op
threads, which on a shared machine wait for each other more than they compute. The chunks are
augmented one after another in epoch order, so the generator sees the same calls as without
the thread, and results are identical.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from train.augment import Handwriting, handwriting, random_affine

logger = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Optimisation settings (all recorded in the artifact's train_config)."""

    epochs: int = 6  # chosen on the validation data: 99.48 % MNIST, 97.83 % real-world
    batch_size: int = 256  # twice the images per step of 128 for about the same step time on CPU
    max_lr: float = 6e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    augment: str = "handwriting"  # one of AUGMENTATIONS
    handwriting: Handwriting = field(default_factory=Handwriting)
    eval_batch_size: int = 2000
    progress: bool = True  # tqdm bars on a terminal; off one, the per-epoch log lines only


AUGMENTATIONS = ("handwriting", "affine", "none")
# Images augmented per call: the augmentation is many small tensor operations whose fixed cost
# per call would rival LeNet's own step at batch size 128.
AUGMENT_CHUNK = 4096


@dataclass
class EpochStats:
    """One row of the training curves."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    images_per_second: float
    seconds: float


@dataclass
class FitResult:
    """The best-validation-loss weights and the per-epoch history."""

    best_state: dict
    best_epoch: int
    history: list[EpochStats] = field(default_factory=list)
    images_per_second: float = 0.0
    seconds: float = 0.0


def augment(images: torch.Tensor, generator: torch.Generator, config: FitConfig) -> torch.Tensor:
    """`images` augmented as `config.augment` says (unchanged for "none")."""
    if config.augment == "handwriting":
        return handwriting(images, generator, config.handwriting)
    if config.augment == "affine":
        return random_affine(images, generator)
    return images


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Logits for `x` in batches, in eval mode, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat(
        [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    )


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000
) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and predicted classes of `model` on `(x, y)`."""
    logits = predict(model, x, batch_size)
    loss = F.cross_entropy(logits, y).item()
    preds = logits.argmax(dim=1)
    return loss, (preds == y).sum().item() / len(y), preds


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    config: FitConfig,
    generator: torch.Generator,
) -> FitResult:
    """Train with AdamW + OneCycleLR; keep the weights with the lowest validation loss.

    `generator` drives shuffling and augmentation so that a seeded run is reproducible.
    """
    if config.augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {config.augment!r}; expected {AUGMENTATIONS}")
    train_x, train_y = train
    val_x, val_y = val
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
    )
    result = FitResult(best_state={}, best_epoch=0)
    best_loss = math.inf
    images_seen, train_time = 0, 0.0
    helper = ThreadPoolExecutor(1, thread_name_prefix="augment")
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(train_x), generator=generator)
            total_loss, correct, seen = 0.0, 0, 0
            start = time.perf_counter()
            # disable=None: tqdm draws only on a terminal, so logs never fill with redraws.
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"epoch {epoch}/{config.epochs}",
                disable=None if config.progress else True,
                leave=True,
                unit="batch",
            )
            chunk = config.batch_size * max(1, AUGMENT_CHUNK // config.batch_size)
            pending = helper.submit(augment, train_x[order[:chunk]], generator, config)
            for step in bar:
                first = step * config.batch_size
                idx = order[first : first + config.batch_size]
                if first % chunk == 0:  # this chunk is ready: start augmenting the next one
                    augmented = pending.result()
                    if first + chunk < len(train_x):
                        images = train_x[order[first + chunk : first + 2 * chunk]]
                        pending = helper.submit(augment, images, generator, config)
                xb = augmented[first % chunk : first % chunk + len(idx)]
                xb = xb.to(device, non_blocking=True)
                yb = train_y[idx].to(device, non_blocking=True)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += loss.item() * len(idx)
                correct += (logits.argmax(1) == yb).sum().item()
                seen += len(idx)
                if step % 20 == 0 or step == steps_per_epoch - 1:
                    rate = seen / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(
                        loss=f"{total_loss / seen:.4f}",
                        acc=f"{correct / seen:.4f}",
                        img_s=f"{rate:,.0f}",
                    )
            epoch_train_time = time.perf_counter() - start
            bar.close()
            train_time += epoch_train_time
            images_seen += seen
            val_loss, val_acc, _ = evaluate(model, val_x, val_y, config.eval_batch_size)
            stats = EpochStats(
                epoch=epoch,
                train_loss=total_loss / seen,
                train_accuracy=correct / seen,
                val_loss=val_loss,
                val_accuracy=val_acc,
                images_per_second=seen / epoch_train_time,
                seconds=time.perf_counter() - start,
            )
            result.history.append(stats)
            logger.info(
                "epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0f img/s",
                epoch,
                stats.train_loss,
                stats.train_accuracy,
                val_loss,
                val_acc,
                stats.images_per_second,
            )
            if val_loss < best_loss:
                best_loss = val_loss
                result.best_epoch = epoch
                result.best_state = copy.deepcopy(model.state_dict())
    finally:
        helper.shutdown(cancel_futures=True)
    result.images_per_second = images_seen / max(train_time, 1e-9)
    result.seconds = train_time
    model.load_state_dict(result.best_state)
    return result
