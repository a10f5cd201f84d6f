"""Hallucination-aware DPO: a subclass of TRL's DPOTrainer with mDPO and dense (RLHF-V) losses, and
reference log-probs precomputed *with the images* (TRL refuses `precompute_ref_log_probs` for vision data).

`loss_type` takes TRL's names and halign's side by side, weighted by `loss_weights`:
    loss_type: [sigmoid, mdpo_conditional, mdpo_anchor]      # mDPO
    loss_type: [dense]                                       # RLHF-V's dense DPO
    loss_type: [sigmoid, sft]                                # plain TRL (RPO); TRL computes it
    loss_type: [sigmoid, sft_rows]                           # RPO, the SFT term averaged per row, not per token
Any of halign's types may be combined with TRL's `sigmoid` and `sft`; other TRL types run alone through TRL.
The math is in align/dpo_losses.py. The data are the pairs of `halign data pairs`:
- `mdpo_conditional` needs a corrupted image per pair: the `rejected_images` of the `image` strategy, or, for
  pairs without one, a crop keeping 5-20 % of the image (mDPO's own corruption), drawn per pair, seeded by
  the pair's text so that every epoch and the reference precompute see the same crop;
- `dense` weights the changed segments of each side: the pair's `chosen_segments` / `rejected_segments`
  (character spans, see dpo_losses) or, without them, the word-level difference of the two texts;
- pairs whose chosen and rejected texts are equal (the `image` strategy) carry no text preference: the
  `sigmoid` and `dense` terms skip them (their DPO loss would be a constant log 2 with no gradient).
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass, field

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from align.dpo_losses import (HALIGN_LOSS_TYPES, SHARED_LOSS_TYPES, diff_segments, token_weights,
                              weighted_sequence_logps)
from reward.files import InputError

TRL_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
CORRUPTED = "corrupted_"          # prefix of the corrupted-image branch's tensors in a batch
BATCH_EXTRAS = ("text_pair_mask", "dense_weights")
# reference values a precomputed cache holds (a column each), per loss type that needs them
REF_COLUMNS = {"base": ("ref_chosen_logps", "ref_rejected_logps"),
               "mdpo_conditional": ("ref_corrupted_logps",),
               "dense": ("ref_chosen_dense_logps", "ref_rejected_dense_logps")}


def check_loss_types(loss_types: list[str], where=None) -> None:
    unknown = [t for t in loss_types if t not in TRL_LOSS_TYPES + HALIGN_LOSS_TYPES]
    if unknown:
        raise InputError(f"unknown loss_type {unknown[0]!r}", file=where,
                         fix=f"choose from TRL's {', '.join(TRL_LOSS_TYPES)} or halign's {', '.join(HALIGN_LOSS_TYPES)}")
    if any(t in HALIGN_LOSS_TYPES for t in loss_types):
        other = [t for t in loss_types if t not in HALIGN_LOSS_TYPES + SHARED_LOSS_TYPES]
        if other:
            raise InputError(f"loss_type {other[0]!r} cannot be combined with halign's "
                             f"{', '.join(t for t in loss_types if t in HALIGN_LOSS_TYPES)}", file=where,
                             fix="combine halign's loss types with sigmoid and sft only")


def ref_columns_for(loss_types) -> list[str]:
    cols = list(REF_COLUMNS["base"])
    for t in ("mdpo_conditional", "dense"):
        if t in loss_types:
            cols += REF_COLUMNS[t]
    return cols


def mdpo_crop(image, key: str):
    """mDPO's corrupted image: a random crop keeping 5-20 % of the area, resized back to the image size
    (so the image-token count, which depends on size for Qwen2-VL/Idefics3, is unchanged)."""
    rng = random.Random(hashlib.sha256(key.encode()).hexdigest())
    w, h = image.size
    frac = rng.uniform(0.05, 0.2)
    aspect = rng.uniform(0.5, 2.0)
    cw = max(1, min(w, round((frac * w * h * aspect) ** 0.5)))
    ch = max(1, min(h, round(frac * w * h / cw)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return image.convert("RGB").crop((x, y, x + cw, y + ch)).resize((w, h))


def _message_text(messages) -> str:
    """The text of a one-message completion (content string or its text parts)."""
    content = messages[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content if p.get("type") == "text")


def split_sides(values: torch.Tensor, text_pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) per pair from one value per batch row, in TRL's layout [chosen..., rejected...] or
    the compact one [chosen..., rejected of the text pairs...], where a pair with equal texts has its
    rejected side equal to its chosen side (the same sequence)."""
    n = text_pairs.numel()
    if values.size(0) == 2 * n:
        return values[:n], values[n:]
    rejected = values[:n].clone()
    rejected[text_pairs.bool()] = values[n:]
    return values[:n], rejected


def collate_side(processor, images, prompts: list[str], completions: list[str], max_length: int | None) -> dict:
    """One side of a preference batch (prompt with its images + one completion), built the way TRL's
    DataCollatorForVisionPreference builds each side, so its tokens match the main batch's."""
    from trl.trainer.utils import flush_left

    kw = dict(padding=True, return_tensors="pt", add_special_tokens=False)
    prompt_enc = processor(images=images, text=prompts, padding_side="left", **kw)
    comp_enc = processor(text=completions, padding_side="right", **kw)
    input_ids = torch.cat((prompt_enc["input_ids"], comp_enc["input_ids"]), dim=1)
    attention_mask = torch.cat((prompt_enc["attention_mask"], comp_enc["attention_mask"]), dim=1)
    completion_mask = torch.cat((torch.zeros_like(prompt_enc["attention_mask"]), comp_enc["attention_mask"]), dim=1)
    extra = {}
    if "token_type_ids" in prompt_enc:
        extra["token_type_ids"] = torch.cat((prompt_enc["token_type_ids"], comp_enc["token_type_ids"]), dim=1)
    if "mm_token_type_ids" in prompt_enc:
        extra["mm_token_type_ids"] = torch.cat(
            (prompt_enc["mm_token_type_ids"], torch.zeros_like(comp_enc["input_ids"])), dim=1)
    names = list(extra)
    attention_mask, input_ids, completion_mask, *rest = flush_left(attention_mask, input_ids, completion_mask,
                                                                   *extra.values())
    out = dict(prompt_enc)
    out.update(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask,
               **dict(zip(names, rest)))
    if max_length is not None:
        for k in ("input_ids", "attention_mask", "completion_mask", *names):
            out[k] = out[k][:, :max_length]
    return out


@dataclass
class HallucinationPreferenceCollator:
    """TRL's vision preference batch, plus what halign's losses need:
    `text_pair_mask` (chosen text != rejected text), the corrupted-image branch (`corrupted_*`: chosen text
    with the corrupted image), `dense_weights` (per token of the batch: gamma on changed segments, 1 on the
    rest of the completion, 0 elsewhere) and precomputed reference columns (`ref_*`) when present.

    `compact_rehearsal`: rows [chosen of every pair..., rejected of the text pairs only] instead of TRL's
    [chosen..., rejected...] when some pairs have equal texts (qa rehearsal rows, image-strategy pairs): their
    rejected row is the chosen row again (the corrupted image is a branch of its own) and feeds no loss (see
    align/dpo_objective.py: `rehearsal_compact_loss` for TRL's `sigmoid` / `sft`, `halign_loss` for
    halign's types, whose sigmoid and dense terms skip such pairs). `dense_weights` follow the same rows."""
    processor: object
    max_length: int | None = None
    corrupted: bool = False
    dense_gamma: float | None = None
    ref_columns: tuple[str, ...] = ()
    compact_rehearsal: bool = False
    _trl: DataCollatorForVisionPreference = field(init=False, repr=False)

    def __post_init__(self):
        self._trl = DataCollatorForVisionPreference(processor=self.processor, max_length=self.max_length)

    def __call__(self, examples: list[dict]) -> dict:
        from trl.data_utils import apply_chat_template, prepare_multimodal_messages

        examples = [dict(e) for e in examples]   # TRL's collator rewrites the messages in place
        rendered = []
        for e in examples:
            msgs = {"prompt": prepare_multimodal_messages(e["prompt"], images=e["images"]),
                    "chosen": prepare_multimodal_messages(e["chosen"]),
                    "rejected": prepare_multimodal_messages(e["rejected"])}
            rendered.append(apply_chat_template(msgs, self.processor))
        texts = [(_message_text(e["chosen"]), _message_text(e["rejected"])) for e in examples]
        text_pairs = [c != r for c, r in texts]
        keep = list(range(len(examples)))          # the pairs whose rejected row the batch holds, in order
        if self.compact_rehearsal and not all(text_pairs):
            # the same tokens as TRL's rows, built in one pass over [chosen of all, rejected of text pairs]
            keep = [i for i, t in enumerate(text_pairs) if t]
            batch = collate_side(self.processor,
                                 [e["images"] for e in examples] + [examples[i]["images"] for i in keep],
                                 [r["prompt"] for r in rendered] + [rendered[i]["prompt"] for i in keep],
                                 [r["chosen"] for r in rendered] + [rendered[i]["rejected"] for i in keep],
                                 self.max_length)
        else:
            batch = self._trl([{k: e[k] for k in ("images", "prompt", "chosen", "rejected")} for e in examples])
        batch["text_pair_mask"] = torch.tensor(text_pairs)
        if self.corrupted:
            images = [self._corrupted_images(e, c) for e, (c, _) in zip(examples, texts)]
            side = collate_side(self.processor, images, [r["prompt"] for r in rendered],
                                [r["chosen"] for r in rendered], self.max_length)
            batch.update({CORRUPTED + k: v for k, v in side.items()})
        if self.dense_gamma is not None:
            batch["dense_weights"] = self._dense_weights(examples, rendered, texts, batch["completion_mask"], keep)
        for col in self.ref_columns:
            batch[col] = torch.tensor([float(e[col]) for e in examples])
        return batch

    @staticmethod
    def _corrupted_images(example, chosen_text: str) -> list:
        given = example.get("rejected_images") or []
        if given:
            return list(given)
        return [mdpo_crop(im, f"{chosen_text}|{i}") for i, im in enumerate(example["images"])]

    def _dense_weights(self, examples, rendered, texts, completion_mask, rejected_rows: list[int]) -> torch.Tensor:
        """Per token of each row: row i is pair i's chosen side, row n + k the rejected side of pair
        rejected_rows[k] (every pair in TRL's layout, the text pairs in the compact one)."""
        tok = self.processor.tokenizer
        weights = torch.zeros(completion_mask.shape, dtype=torch.float32)
        n = len(examples)
        rejected_row = {i: n + k for k, i in enumerate(rejected_rows)}
        for i, (e, r, (chosen_text, rejected_text)) in enumerate(zip(examples, rendered, texts)):
            marks = e.get("chosen_segments"), e.get("rejected_segments")
            if marks[0] is None and marks[1] is None:
                marks = diff_segments(chosen_text, rejected_text)
            sides = [(i, r["chosen"], chosen_text, marks[0])]
            if i in rejected_row:
                sides.append((rejected_row[i], r["rejected"], rejected_text, marks[1]))
            for row, completion, text, segments in sides:
                enc = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
                start = completion.find(text) if text else 0
                w = token_weights(enc["offset_mapping"], max(start, 0), segments, self.dense_gamma)
                positions = completion_mask[row].nonzero().flatten()
                if len(w) < len(positions):
                    raise InputError("dense weights: the completion re-tokenized differently from the batch",
                                     record=f"pair {i}", fix="report this: the tokenizer is not prefix-stable")
                weights[row, positions] = torch.tensor(w[:len(positions)])   # max_length may cut the end
        return weights


class HallucinationDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer + halign's loss types (`mdpo_conditional`, `mdpo_anchor`, `dense`) and reference
    log-probs precomputed with the images (`precompute_ref_log_probs: true` on vision data)."""

    def __init__(self, model, ref_model=None, args=None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, ref_cache=None, **kwargs):
        loss_types = list(args.loss_type) if isinstance(args.loss_type, (list, tuple)) else [args.loss_type]
        check_loss_types(loss_types)
        self._halign_types = [t for t in loss_types if t in HALIGN_LOSS_TYPES]
        sample = next(iter(train_dataset))
        vision = "images" in sample or "image" in sample
        # TRL refuses precompute for vision data in __init__; halign computes it itself (with the images), so
        # the flag is hidden from TRL's check and restored right after (create_accelerator_and_postprocess)
        self._vision_precompute = bool(args.precompute_ref_log_probs) and vision
        if (self._halign_types or self._vision_precompute) and args.ld_alpha is not None:
            raise InputError("ld_alpha is not supported with halign's loss types or vision precompute",
                             fix="remove ld_alpha, or use TRL's loss types with live reference")
        if self._vision_precompute:
            args.precompute_ref_log_probs = False
        self._ref_cache = ref_cache
        self._ref_columns = ref_columns_for(loss_types)
        if data_collator is None and vision:
            data_collator = HallucinationPreferenceCollator(
                processing_class, max_length=args.max_length, corrupted="mdpo_conditional" in loss_types,
                dense_gamma=getattr(args, "dense_gamma", 5.0) if "dense" in loss_types else None,
                ref_columns=tuple(self._ref_columns) if self._vision_precompute else ())
        super().__init__(model, ref_model=ref_model, args=args, data_collator=data_collator,
                         train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processing_class,
                         **kwargs)
        if isinstance(self.data_collator, HallucinationPreferenceCollator) and self._compacts_rehearsal(loss_types):
            self.data_collator.compact_rehearsal = True

    def _compacts_rehearsal(self, loss_types) -> bool:
        """Whether equal-text pairs can skip their rejected row: only where no loss term reads it. halign's
        loss skips such pairs in its sigmoid and dense terms and reads only chosen rows otherwise; TRL's
        sigmoid gives them a constant (log 2, no gradient) and its sft term reads chosen rows."""
        args = self.args
        plain = (args.f_divergence_type == "reverse_kl" and not args.use_weighting and args.ld_alpha is None
                 and not self.aux_loss_enabled)
        return plain and (bool(self._halign_types) or set(loss_types) <= {"sigmoid", "sft"})

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        if self._vision_precompute:
            # from here on TRL reads the flag: no live reference model is loaded, `_precompute_ref_logps`
            # (overridden below) runs at the end of __init__, and the loss reads the ref_* columns
            self.args.precompute_ref_log_probs = True
            self.precompute_ref_logps = True   # TRL copied the (hidden) flag before Trainer.__init__

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = ["rejected_images", "chosen_segments", "rejected_segments"] + self._ref_columns
        self._signature_columns = list(dict.fromkeys(list(self._signature_columns) + extra))

    # ------------------------------------------------------------------------------------------ reference
    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        if not self._vision_precompute:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        from align.ref_cache import precompute_reference
        return precompute_reference(self, dataset, name, batch_size, self._ref_cache)

    @contextlib.contextmanager
    def _reference_context(self):
        """Reference = the frozen copy, or (LoRA, no copy) the same weights with the adapters disabled."""
        from accelerate.utils import is_peft_model
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        adapter = contextlib.nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs), \
                adapter, self.accelerator.autocast():
            yield

    def reference_per_token_logps(self, side: dict, model=None) -> torch.Tensor:
        """Per-token reference log-probs (shifted: column t scores token t+1) of one side's batch."""
        model = model if model is not None else (self.ref_model or self.model)
        with self._reference_context():
            return self._per_token_logps(model, side)

    @staticmethod
    def _per_token_logps(model, side: dict) -> torch.Tensor:
        kwargs = {k: v for k, v in side.items() if k != "completion_mask" and not k.startswith("ref_")}
        labels = side["input_ids"].masked_fill(side["completion_mask"] == 0, -100)
        out = model(**kwargs, labels=labels, use_cache=False, fused_lm_head=True)
        return out.log_probs[:, -(side["completion_mask"].size(1) - 1):]

    def reference_values(self, inputs: dict, model=None) -> dict[str, torch.Tensor]:
        """Every reference value halign's losses need for a batch (what the precompute stores per pair)."""
        main = {k: v for k, v in inputs.items() if k not in BATCH_EXTRAS and not k.startswith(CORRUPTED)}
        per_token = self.reference_per_token_logps(main, model)
        text_pairs = inputs["text_pair_mask"].bool()
        chosen, rejected = split_sides(per_token.sum(dim=1), text_pairs)
        values = {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}
        if "mdpo_conditional" in self._halign_types:
            side = {k[len(CORRUPTED):]: v for k, v in inputs.items() if k.startswith(CORRUPTED)}
            values["ref_corrupted_logps"] = self.reference_per_token_logps(side, model).sum(dim=1)
        if "dense" in self._halign_types:
            dense = weighted_sequence_logps(per_token, inputs["dense_weights"][:, 1:].to(per_token.dtype))
            values["ref_chosen_dense_logps"], values["ref_rejected_dense_logps"] = split_sides(dense, text_pairs)
        return values

    # ------------------------------------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs, return_outputs):
        inputs = dict(inputs)
        # on a compact batch too: every batch takes the same path, so that all ranks run the same collectives
        if self._halign_types:
            from align.dpo_objective import halign_loss
            return halign_loss(self, model, inputs, return_outputs)
        if getattr(self.data_collator, "compact_rehearsal", False):
            from align.dpo_objective import rehearsal_compact_loss
            return rehearsal_compact_loss(self, model, inputs, return_outputs)
        # TRL's own loss types: TRL computes them (ref_* columns included) from TRL's batch keys
        for k in [k for k in inputs if k in BATCH_EXTRAS or k.startswith(CORRUPTED)]:
            inputs.pop(k)
        return super()._compute_loss(model, inputs, return_outputs)
