"""The Ray Train worker of the fine-tuning pipeline (runs inside every training worker).

Each worker fine-tunes its DDP replica of the model on its shard of every global batch,
validates on its shard of the validation set, and reports metrics with a checkpoint (written
by rank 0) after each epoch, or when the time budget runs out. A restarted worker group
resumes from ``ray.train.get_checkpoint()``: model, optimizer, scheduler, position and clock.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maas.engines.windows import mean_by_owner, predict, text_windows
from pipelines.training.runs import (
    budget_spent,
    fmt_s,
    rank0_print,
    report_with_checkpoint,
    start_worker,
    unwrap,
)

if TYPE_CHECKING:
    import torch

STATE_FILE = "trainer_state.pt"
CHECKPOINT_MODEL_DIR = "model"
_LENGTH_GROUP_BATCHES = 50


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    """Ray Train worker: data-parallel fine-tuning with per-epoch validation and checkpoints."""
    import ray.train

    run = _WorkerRun(cfg, *start_worker(cfg))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and cfg["head_init"] == "probe":
        run.fit_probe_head()
    if not cfg.get("fine_tune", True):  # the linear probe is the whole model
        run.done = True
        run._report([], stopped=False)
        return
    run.restore(checkpoint)
    run.train()


class _WorkerRun:
    """The state of one worker's training run (model, optimizer, position, clock)."""

    def __init__(self, cfg: dict[str, Any], rank: int, world: int) -> None:
        import ray.train.torch
        from transformers import AutoTokenizer, get_linear_schedule_with_warmup

        from maas.engines.classifier_heads import new_classifier

        self.cfg, self.rank, self.world = cfg, rank, world
        self.device = ray.train.torch.get_device()
        self.tokenizer = AutoTokenizer.from_pretrained(cfg["base_model"])
        model = new_classifier(cfg["base_model"], cfg["labels"], cfg["pooling"])
        self.model = ray.train.torch.prepare_model(model)
        self.train_examples, self.train_labels = self._examples(cfg["train_texts"], cfg["train_labels"])
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.steps_per_epoch = len(self._epoch_batches())
        total = self.steps_per_epoch * cfg["epochs"]
        self.optimizer = _adamw(self.model, cfg["learning_rate"], cfg["weight_decay"])
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(cfg["warmup_ratio"] * total), total
        )
        self.elapsed_before = 0.0  # training seconds spent by earlier attempts (restored)
        self.resumed_from_step = 0  # global step of the checkpoint this attempt started from
        self.done = False
        self.start, self.start_step = time.perf_counter(), 0
        self.step_seconds = 0.0  # time spent in training steps by this attempt

    def restore(self, checkpoint: Any) -> None:
        """Continue from a checkpoint of an earlier attempt of this run, if there is one."""
        import torch

        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, weights_only=False)
            weights = _load_weights(Path(folder) / CHECKPOINT_MODEL_DIR)
        unwrap(self.model).load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.elapsed_before, self.done = (
            state["global_step"],
            state["elapsed_s"],
            state["done"],
        )
        self.resumed_from_step = self.global_step
        self._print(f"resumed from checkpoint: epoch {self.epoch + 1}, step {self.global_step}")

    def fit_probe_head(self) -> None:
        """LP-FT's first stage (:mod:`pipelines.training.linear_probe`): every rank reads its shard of the
        training and validation texts with the frozen model; all ranks fit the same probe on the
        gathered features, and rank 0's head is broadcast so the DDP replicas stay identical."""
        import torch.distributed as dist

        from pipelines.training.linear_probe import fit_probe, set_head

        start = time.perf_counter()
        self._status("linear probe")
        train_x, train_y = self._gathered_features(self.cfg["train_texts"], self.cfg["train_labels"])
        val_x, val_y = self._gathered_features(self.cfg["val_texts"], self.cfg["val_labels"])
        model = unwrap(self.model)
        probe = fit_probe(train_x, train_y, val_x, val_y, model.config.num_labels)
        set_head(model, probe)
        if dist.is_available() and dist.is_initialized():
            for param in model.classifier.parameters():
                dist.broadcast(param.data, src=0)
        self._print(f"linear-probe head: C={probe.c}, validation macro-F1 {probe.val_macro_f1:.4f} "
                    f"({fmt_s(time.perf_counter() - start)})")

    def _gathered_features(self, texts: list[str], labels: list[int]) -> tuple[Any, list[int]]:
        """The head's inputs for all ``texts`` (each rank computes its shard), with their labels."""
        import numpy as np
        import torch.distributed as dist

        from pipelines.training.linear_probe import head_inputs

        mine = slice(self.rank, None, self.world)
        features = head_inputs(unwrap(self.model), self.tokenizer, texts[mine],
                               self.cfg["max_seq_len"], self.cfg["max_windows"])
        shards = [(features, labels[mine])]
        if dist.is_available() and dist.is_initialized():
            shards = [None] * self.world  # type: ignore[list-item]
            dist.all_gather_object(shards, (features, labels[mine]))
        return np.concatenate([x for x, _ in shards]), [y for _, ys in shards for y in ys]

    def train(self) -> None:
        """Run the remaining epochs; report a checkpoint after each, or when the budget runs out."""
        self.start = time.perf_counter()
        self.start_step = self.global_step
        self._status("fine-tune", step=self.global_step)
        while not self.done and self.epoch < self.cfg["epochs"]:
            losses, stopped = self._train_epoch()
            if not stopped:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self.done = stopped or self.epoch >= self.cfg["epochs"]
            self._report(losses, stopped)

    def _status(self, phase: str, step: int | None = None, eta_s: float | None = None) -> None:
        """Rank 0 writes where the run stands to the run's status file (if it has one): what
        ``maas status``, ``/v1/models`` and ``maas serve``'s progress line read."""
        path = self.cfg.get("progress_file")
        if self.rank != 0 or not path:
            return
        from maas.storage.registry import TrainingStatus, write_status

        total = self.steps_per_epoch * self.cfg["epochs"] if step is not None else None
        write_status(path, TrainingStatus(state="training", phase=phase, step=step, total=total, eta_s=eta_s))

    def _train_epoch(self) -> tuple[list[float], bool]:
        """Train from the current position to the end of the epoch or of the time budget."""
        self.model.train()
        losses: list[float] = []
        batches = self._epoch_batches()
        for step in range(self.step_in_epoch, len(batches)):
            if self._budget_spent():
                return losses, True
            tick = time.perf_counter()
            losses.append(self._train_step(batches[step]))
            self.step_seconds += time.perf_counter() - tick
            self.step_in_epoch, self.global_step = step + 1, self.global_step + 1
            if self.global_step % self.cfg["log_every_steps"] == 0:
                self._log_progress(losses)
        return losses, False

    def _train_step(self, batch: list[int]) -> float:
        import torch

        windows = [(row, ids) for row, i in enumerate(batch) for ids in self.train_examples[i]]
        inputs = _pad([ids for _, ids in windows], self.tokenizer.pad_token_id, self.device)
        labels = torch.tensor([self.train_labels[i] for i in batch], device=self.device)
        # An example's logits are its windows' mean, as when predicting (one window: itself).
        logits = mean_by_owner(self.model(**inputs).logits, [row for row, _ in windows], len(batch))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _epoch_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch (see :func:`rank_batches`)."""
        lengths = [sum(map(len, windows)) for windows in self.train_examples]
        return rank_batches(
            lengths, self.cfg["batch_size"], self.world, self.rank, self.cfg["seed"], self.epoch
        )

    def _budget_spent(self) -> bool:
        """Whether any rank ran out of time (all ranks agree, so they stop at the same step)."""
        return budget_spent(self.cfg["time_budget_s"], self._elapsed())

    def _report(self, losses: list[float], stopped: bool) -> None:
        """Validate, then report metrics with a checkpoint (written by rank 0 only)."""
        metrics = {
            "epoch": self.epoch if not stopped else self.epoch + self.step_in_epoch / self.steps_per_epoch,
            "global_step": self.global_step,
            "train_loss": sum(losses) / len(losses) if losses else float("nan"),
            "val_accuracy": self._validate(),
            "train_examples_per_s": self._examples_per_s(),
            "train_time_s": self._elapsed(),
            "stopped_early": float(stopped),
            "resumed_from_step": self.resumed_from_step,
        }
        if not losses:  # a probe-only run, or a budget spent before the first step
            metrics.pop("train_loss")
        self._print(
            f"{'stopped early (time budget)' if stopped else 'epoch done'}: epoch {metrics['epoch']:.2f}, "
            f"step {self.global_step}, train_loss {metrics.get('train_loss', float('nan')):.4f}, "
            f"val_accuracy {metrics['val_accuracy']:.4f}, {metrics['train_examples_per_s']:.1f} ex/s"
        )
        report_with_checkpoint(self.rank, metrics, self._save, "maas-ckpt-")

    def _save(self, folder: Path) -> None:
        """Write the model, tokenizer and optimizer/scheduler/position state into ``folder``."""
        import torch

        unwrap(self.model).save_pretrained(folder / CHECKPOINT_MODEL_DIR, safe_serialization=True)
        self.tokenizer.save_pretrained(folder / CHECKPOINT_MODEL_DIR)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "elapsed_s": self._elapsed(),
            "done": self.done,
        }
        torch.save(state, folder / STATE_FILE)

    def _validate(self) -> float:
        """Accuracy on the validation set, each rank scoring its own shard."""
        import torch
        import torch.distributed as dist

        texts, labels = (
            self.cfg["val_texts"][self.rank :: self.world],
            self.cfg["val_labels"][self.rank :: self.world],
        )
        # The bare module: DDP's forward would sync buffers, and shards may differ in batch count.
        predicted = (
            predict(unwrap(self.model), self.tokenizer, texts, self.cfg["max_seq_len"],
                    self.cfg["max_windows"]) if texts else []
        )
        counts = torch.tensor(
            [sum(p == y for p, y in zip(predicted, labels)), len(labels)], dtype=torch.float64
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        return float(counts[0] / counts[1]) if counts[1] else float("nan")

    def _examples(self, texts: list[str], labels: list[int]) -> tuple[list[list[list[int]]], list[int]]:
        """Training examples as lists of token-id windows, with their labels: each text with all
        its windows (``train_on: texts``), or each window alone with its text's label."""
        per_text = text_windows(self.tokenizer, texts, self.cfg["max_seq_len"], self.cfg["max_windows"])
        if self.cfg["train_on"] == "texts":
            return per_text, list(labels)
        pairs = [([ids], label) for windows, label in zip(per_text, labels) for ids in windows]
        return [windows for windows, _ in pairs], [label for _, label in pairs]

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def _examples_per_s(self) -> float:
        """Training throughput of all ranks together (steps only: no validation or checkpoints)."""
        steps = self.global_step - self.start_step
        return steps * self.cfg["batch_size"] * self.world / self.step_seconds if self.step_seconds else 0.0

    def _log_progress(self, losses: list[float]) -> None:
        window = losses[-self.cfg["log_every_steps"] :]
        total = self.steps_per_epoch * self.cfg["epochs"]
        rate = (self.global_step - self.start_step) / max(time.perf_counter() - self.start, 1e-9)
        eta = (total - self.global_step) / rate if rate else float("inf")
        budget = self.cfg["time_budget_s"]
        if budget is not None:
            eta = min(eta, max(budget - self._elapsed(), 0.0))
        self._status("fine-tune", step=self.global_step, eta_s=eta if math.isfinite(eta) else None)
        self._print(
            f"epoch {self.epoch + 1}/{self.cfg['epochs']} step {self.global_step}/{total} "
            f"loss {sum(window) / len(window):.4f} | {self._examples_per_s():.1f} ex/s | "
            f"elapsed {fmt_s(self._elapsed())} | ETA {fmt_s(eta)}"
        )

    def _print(self, message: str) -> None:
        rank0_print(self.rank, message)


def rank_batches(
    lengths: Sequence[int], batch_size: int, world: int, rank: int, seed: int, epoch: int
) -> list[list[int]]:
    """Indices of ``rank``'s batches for one epoch of data-parallel training.

    A seeded shuffle (the same on every rank) is padded by wrap-around to a multiple of
    ``world``, cut into chunks of 50 global batches, each chunk sorted by length and cut into
    global batches of ``batch_size * world``, whose order is shuffled again. Rank ``r`` takes
    every ``world``-th example of each global batch, so all ranks run the same number of steps
    on similar lengths, and batches of similar lengths waste little compute on padding.
    """
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order += order[: (-len(order)) % world]
    global_size = batch_size * world
    chunk = global_size * _LENGTH_GROUP_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lengths.__getitem__)
        batches.extend(part[i : i + global_size] for i in range(0, len(part), global_size))
    rng.shuffle(batches)
    return [batch[rank::world] for batch in batches]


def _adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights."""
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _pad(sequences: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad token ids to the longest sequence of the batch, with an attention mask."""
    import torch

    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))
