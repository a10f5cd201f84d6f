"""Batched generation for image prompts: `halign eval generate`, and the engine behind eval and mining.

Greedy by default (benchmarks), seeded sampling with `--num-samples k` for on-policy pair mining.
Besides the responses it measures where the time goes — vision encoder, prefill, decode — because that
is what practitioners ask of an eval harness.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from reward.files import InputError, iter_records, write_jsonl


@dataclass
class GenerationTimings:
    images: int = 0
    new_tokens: int = 0
    vision_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    batches: int = 0

    def as_dict(self) -> dict:
        d = {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items()}
        d["images_per_s"] = round(self.images / self.total_s, 2) if self.total_s else None
        d["decode_tokens_per_s"] = round(self.new_tokens / self.decode_s, 1) if self.decode_s else None
        return d


@dataclass
class PromptRecord:
    image_id: object
    image: Path
    prompt: str
    extra: dict = field(default_factory=dict)


def read_prompts(path: str | Path, images_dir: str | Path | None = None) -> list[PromptRecord]:
    """Prompts JSONL: {"image_id", "image", "prompt"} (POPE questions: "text" instead of "prompt")."""
    from data_prep.conversations import resolve_image

    path = Path(path)
    root = Path(images_dir) if images_dir else path.parent
    out = []
    for line, rec in iter_records(path, "prompts file"):
        where = f"line {line}"
        text = rec.get("prompt", rec.get("text"))
        if not isinstance(text, str) or "image" not in rec:
            raise InputError("a prompt record needs 'image' and 'prompt' (or 'text')", file=path, record=where,
                             fix='write {"image_id": ..., "image": "rel/path.png", "prompt": "Describe the image."}')
        image = resolve_image(root, rec["image"], path, where)
        extra = {k: v for k, v in rec.items() if k not in ("image", "prompt", "text")}
        out.append(PromptRecord(rec.get("image_id"), image, text, extra))
    return out


def _vision_module(model):
    inner = getattr(model, "model", model)
    inner = getattr(inner, "base_model", inner)
    inner = getattr(inner, "model", inner)
    for name in ("vision_tower", "vision_model", "visual"):
        if hasattr(inner, name):
            return getattr(inner, name)
    return None


@contextmanager
def _time_module(module, timings: GenerationTimings):
    """Accumulate the wall time spent inside `module`'s forward (vision encoder)."""
    if module is None:
        yield
        return
    start = {}
    h1 = module.register_forward_pre_hook(lambda *_: start.__setitem__("t", time.perf_counter()))

    def post(*_):
        timings.vision_s += time.perf_counter() - start["t"]
    h2 = module.register_forward_hook(post)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()


class _FirstStep:
    """A stopping criterion that never stops: its first call marks the end of prefill."""

    def __init__(self):
        self.t = None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.t is None:
            self.t = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def chat_prompt(processor, prompt: str) -> str:
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def generate_responses(model, processor, records: list[PromptRecord], *, batch_size: int = 32,
                       max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                       top_p: float = 1.0, num_samples: int = 1, seed: int = 0, desc: str = "generate"):
    """Generate for every record; returns (rows, timings). rows: one per record and sample, in input order."""
    import torch
    from PIL import Image
    from tqdm.auto import tqdm
    from transformers import StoppingCriteriaList

    torch.manual_seed(seed)
    model.eval()
    tok = processor.tokenizer
    tok.padding_side = "left"   # decoder-only generation pads on the left
    timings = GenerationTimings()
    rows = []
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=num_samples,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p)
    t_all = time.perf_counter()
    with torch.inference_mode(), _time_module(_vision_module(model), timings):
        for start in tqdm(range(0, len(records), batch_size), desc=desc, unit="batch",
                          total=math.ceil(len(records) / batch_size)):
            batch = records[start:start + batch_size]
            images = [Image.open(r.image).convert("RGB") for r in batch]
            texts = [chat_prompt(processor, r.prompt) for r in batch]
            enc = processor(images=images, text=texts, padding=True, return_tensors="pt")
            first = _FirstStep()
            vision_before = timings.vision_s
            t0 = time.perf_counter()
            out = model.generate(**enc, stopping_criteria=StoppingCriteriaList([first]), **gen_kwargs)
            t1 = time.perf_counter()
            prefill_end = first.t or t1
            timings.prefill_s += prefill_end - t0 - (timings.vision_s - vision_before)
            timings.decode_s += t1 - prefill_end
            new = out[:, enc["input_ids"].shape[1]:]
            timings.new_tokens += int((new != tok.pad_token_id).sum())
            texts_out = tok.batch_decode(new, skip_special_tokens=True)
            for i, r in enumerate(batch):
                for s in range(num_samples):
                    row = {"image_id": r.image_id, "prompt": r.prompt,
                           "response": texts_out[i * num_samples + s].strip()}
                    if num_samples > 1:
                        row["sample"] = s
                    row.update(r.extra)
                    rows.append(row)
            timings.images += len(batch)
            timings.batches += 1
    timings.total_s = time.perf_counter() - t_all
    return rows, timings


def generate_command(model: Path, prompts: Path, out: Path, images: Path | None = None, batch_size: int = 32,
                     max_new_tokens: int = 64, sample: bool = False, temperature: float = 1.0,
                     top_p: float = 1.0, num_samples: int = 1, seed: int = 0,
                     trust_remote_code: bool = False) -> int:
    """Generate a response for every image prompt with a checkpoint (batched, KV cache).

    Greedy unless --sample; --num-samples k draws k samples per prompt (for on-policy pair mining).
    Writes JSONL {"image_id", "prompt", "response"} (+ "sample", and any extra fields of the prompt record).

    Args:
        model: checkpoint folder or hub name (AutoModelForImageTextToText + AutoProcessor)
        prompts: JSONL of {"image_id", "image", "prompt"}; POPE question files ("text") work too
        out: output JSONL
        images: folder the image paths are relative to (default: the prompts file's folder)
        batch_size: prompts per forward pass
        max_new_tokens: longest response
        sample: sample instead of greedy decoding
        temperature: sampling temperature
        top_p: nucleus sampling mass
        num_samples: responses per prompt (with --sample)
        seed: random seed (sampling is reproducible for a seed)
        trust_remote_code: allow code shipped with the checkpoint
    """
    from align.modeling import check_model_processor, load_model, load_processor

    if num_samples > 1 and not sample:
        raise InputError("--num-samples > 1 needs --sample", fix="add --sample (greedy decoding repeats itself)")
    records = read_prompts(prompts, images)
    m = load_model(str(model), trust_remote_code)
    p = load_processor(str(model), trust_remote_code)
    check_model_processor(m, p, str(model))
    rows, timings = generate_responses(m, p, records, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                       do_sample=sample, temperature=temperature, top_p=top_p,
                                       num_samples=num_samples, seed=seed)
    write_jsonl(out, rows)
    t = timings.as_dict()
    print(f"generated {len(rows)} responses for {t['images']} images in {t['total_s']} s "
          f"({t['images_per_s']} images/s; vision {t['vision_s']} s, prefill {t['prefill_s']} s, "
          f"decode {t['decode_s']} s) -> {out}")
    return 0
