"""Check before training that no row loses image tokens to `max_length`.

A truncated row crashes mid-run with "image features and image tokens do not match" (or, worse, trains on
an image without its tokens). We count each row's length exactly as the model will see it: the chat
template's text tokens, with every image placeholder expanded to the number of tokens the processor
gives an image of that size (fixed for LLaVA, size-dependent for Qwen2-VL / Idefics3, with Idefics3's tile markers counted).
"""
from __future__ import annotations

from functools import lru_cache

from reward.files import InputError


def image_token_id(processor) -> int:
    tid = getattr(processor, "image_token_id", None)
    if tid is None:
        tok = processor.tokenizer
        tid = tok.convert_tokens_to_ids(getattr(processor, "image_token", None) or tok.image_token)
    return tid


def make_image_token_counter(processor):
    """size (w, h) -> number of tokens one image placeholder becomes in the processor's output.

    That is the image tokens plus whatever the family wraps them in (Idefics3/SmolVLM: the fake-token
    markers, <row_i_col_j> tags, the global-image tag and newlines between tile rows), measured as the
    growth of a probe text when the processor expands it, so it is exact for every family."""
    from PIL import Image

    tok = processor.tokenizer

    @lru_cache(maxsize=None)
    def count(size: tuple[int, int]) -> int:
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
        text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        unexpanded = len(tok(text, add_special_tokens=False)["input_ids"])
        enc = processor(images=[Image.new("RGB", tuple(size))], text=[text], add_special_tokens=False,
                        return_tensors="pt")
        return int(enc["input_ids"].shape[1]) - unexpanded + 1   # the placeholder itself was one token

    return count


def row_lengths(rows, processor, texts_of, sizes_of) -> list[int]:
    """Token count of each row: `texts_of(row)` gives its full templated text, `sizes_of(row)` image sizes."""
    tok = processor.tokenizer
    tid = image_token_id(processor)
    count = make_image_token_counter(processor)
    out = []
    for row in rows:
        ids = tok(texts_of(row), add_special_tokens=False)["input_ids"]
        placeholders = sum(1 for t in ids if t == tid)
        sizes = sizes_of(row)
        if placeholders and placeholders != len(sizes):
            # templates that emit one placeholder per image: anything else is a template/data mismatch
            raise InputError(f"{placeholders} image placeholders in the rendered text but {len(sizes)} images",
                             fix="check the chat template against the row's image parts")
        out.append(len(ids) - placeholders + sum(count(s) for s in sizes))
    return out


def filter_by_length(lengths: list[int], max_length: int | None, *, drop: bool, where: str) -> list[int]:
    """Indices of rows to keep. Refuse (or drop and count) rows longer than max_length."""
    if max_length is None:
        return list(range(len(lengths)))
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    if too_long and not drop:
        i = too_long[0]
        raise InputError(f"{len(too_long)} rows are longer than max_length={max_length} (row {i} has "
                         f"{lengths[i]} tokens incl. image tokens); truncation would cut image tokens",
                         file=where, fix="raise max_length, or set drop_long_samples: true to drop them")
    if too_long:
        print(f"dropped {len(too_long)} rows longer than max_length={max_length}")
    keep = set(too_long)
    return [i for i in range(len(lengths)) if i not in keep]
