"""The Ray Train worker of LoRA fine-tuning (runs inside every training worker).

Every worker wraps the base causal LM in a PEFT LoRA model (only the adapter's matrices train),
wraps that in DDP, and trains on its shard of every global batch: the loss is the cross-entropy
of the answer tokens only (the prompt is context). Rank 0 writes a checkpoint (the adapter,
optimizer, scheduler, step and clock) every ``checkpoint_every_steps`` steps and at the end; a
worker group restarted after a worker loss resumes from ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

ADAPTER_DIR = "adapter"
STATE_FILE = "lora_state.pt"
IGNORE = -100


def lora_train_loop(cfg: dict[str, Any]) -> None:
    """Ray Train worker: data-parallel LoRA fine-tuning with periodic checkpoints."""
    import ray.train

    run = _LoraRun(cfg, *start_worker(cfg))
    run.restore(ray.train.get_checkpoint())
    run.train()


def new_lora_model(base_model: str, rank: int, alpha: float, dropout: float, target_modules: list[str],
                   seed: int) -> Any:
    """The base causal LM (float32) with fresh LoRA matrices on ``target_modules``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)  # the same initial adapter on every rank
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def batch_tensors(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (prompt tokens ignored)."""
    import torch

    width = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (prompt, answer) in enumerate(examples):
        seq = prompt + answer
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(prompt) : len(seq)] = torch.tensor(answer)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def step_batches(n_examples: int, batch_size: int, world: int, rank: int, seed: int, steps: int) -> list[list[int]]:
    """``rank``'s example indices for each of ``steps`` steps: passes over a seeded shuffle (the
    same on every rank) cut into global batches of ``batch_size * world``, rank ``r`` taking every
    ``world``-th example of each."""
    order: list[int] = []
    epoch = 0
    need = steps * batch_size * world
    while len(order) < need:
        part = list(range(n_examples))
        random.Random(f"{seed}-{epoch}").shuffle(part)
        order += part
        epoch += 1
    size = batch_size * world
    return [order[s * size : (s + 1) * size][rank::world] for s in range(steps)]


class _LoraRun:
    """One worker's LoRA training run (model, optimizer, position, clock)."""

    def __init__(self, cfg: dict[str, Any], rank: int, world: int) -> None:
        import ray.train.torch
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.cfg, self.rank, self.world = cfg, rank, world
        model = new_lora_model(cfg["base_model_path"], cfg["rank"], cfg["alpha"], cfg["dropout"],
                               cfg["target_modules"], cfg["seed"])
        self.model = ray.train.torch.prepare_model(model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg["learning_rate"], weight_decay=0.0)
        total = cfg["max_steps"]
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(cfg["warmup_ratio"] * total), total)
        self.batches = step_batches(len(cfg["train"]), cfg["batch_size"], world, rank, cfg["seed"], total)
        self.step, self.elapsed_before, self.resumed_from_step = 0, 0.0, 0
        self.start = time.perf_counter()

    def restore(self, checkpoint: Any) -> None:
        """Continue from the checkpoint of an earlier attempt of this run, if there is one."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, weights_only=False)
            weights = load_file(str(Path(folder) / ADAPTER_DIR / "adapter_model.safetensors"))
        set_peft_model_state_dict(unwrap(self.model), weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.elapsed_before = state["step"], state["elapsed_s"]
        self.resumed_from_step = self.step
        self._print(f"resumed from checkpoint at step {self.step}")

    def train(self) -> None:
        import torch

        self.start = time.perf_counter()
        self.model.train()
        losses: list[float] = []
        every = self.cfg["checkpoint_every_steps"]
        stopped = False
        while self.step < self.cfg["max_steps"]:
            if self._budget_spent():
                stopped = True
                break
            batch = [self.cfg["train"][i] for i in self.batches[self.step]]
            inputs = batch_tensors([(p, a) for p, a in batch], self.cfg["pad_id"])
            loss = self.model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            self.step += 1
            if self.step % self.cfg["log_every_steps"] == 0:
                recent = losses[-self.cfg["log_every_steps"]:]
                self._print(f"step {self.step}/{self.cfg['max_steps']} loss {sum(recent) / len(recent):.4f} "
                            f"| elapsed {fmt_s(self._elapsed())}")
            if every and self.step % every == 0 and self.step < self.cfg["max_steps"]:
                self._report(losses[-every:], final=False, stopped=False)
        self._report(losses[-50:], final=True, stopped=stopped)

    def _budget_spent(self) -> bool:
        """Whether any rank ran out of time (all ranks agree, so they stop at the same step)."""
        return budget_spent(self.cfg["time_budget_s"], self._elapsed())

    def _validation_loss(self) -> float:
        """Mean answer-token loss on this rank's shard of the validation examples, averaged over ranks."""
        import torch
        import torch.distributed as dist

        model = unwrap(self.model)
        model.eval()
        mine = self.cfg["validation"][self.rank :: self.world]
        total = torch.zeros(2, dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, len(mine), self.cfg["batch_size"]):
                chunk = mine[start : start + self.cfg["batch_size"]]
                loss = model(**batch_tensors([(p, a) for p, a in chunk], self.cfg["pad_id"])).loss
                total += torch.tensor([float(loss) * len(chunk), len(chunk)], dtype=torch.float64)
        model.train()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
        return float(total[0] / total[1]) if total[1] else float("nan")

    def _report(self, losses: list[float], final: bool, stopped: bool) -> None:
        metrics = {
            "global_step": self.step,
            "train_loss": sum(losses) / len(losses) if losses else float("nan"),
            "train_time_s": self._elapsed(),
            "stopped_early": float(stopped),
            "resumed_from_step": self.resumed_from_step,
            "final": float(final),
        }
        if final:
            metrics["validation_loss"] = self._validation_loss()
        self._print(f"checkpoint at step {self.step}: train_loss {metrics['train_loss']:.4f}"
                    + (f", validation_loss {metrics['validation_loss']:.4f}" if final else ""))
        report_with_checkpoint(self.rank, metrics, self._save, "maas-lora-ckpt-")

    def _save(self, folder: Path) -> None:
        import torch

        unwrap(self.model).save_pretrained(folder / ADAPTER_DIR, safe_serialization=True)
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "step": self.step, "elapsed_s": self._elapsed()}
        torch.save(state, folder / STATE_FILE)

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def _print(self, message: str) -> None:
        rank0_print(self.rank, message)
