"""A contact sheet: one row of example images per group (defect kind, rating band, ...)."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

from PIL import Image, ImageDraw

from lightning_alchemist.data.decode import IMAGE_EXTENSIONS, first_member
from lightning_alchemist.data.mapstyle import ShardDataset

_LABEL_WIDTH = 110


def contact_sheet(
    dataset: ShardDataset,
    rows: Mapping[str, Sequence[str]],
    cell: int = 64,
    per_row: int = 8,
) -> Image.Image:
    """Render ``rows`` (row label -> sample keys) from ``dataset`` as one image.

    Images are shown as stored (not transformed), each resized to ``cell`` pixels.
    """
    position = {key: i for i, key in enumerate(dataset.keys)}
    sheet = Image.new("RGB", (_LABEL_WIDTH + per_row * (cell + 4), max(len(rows), 1) * (cell + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, keys) in enumerate(rows.items()):
        y = r * (cell + 4) + 2
        draw.text((4, y + cell // 2 - 6), str(label), fill="black")
        for c, key in enumerate(list(keys)[:per_row]):
            if key not in position:
                continue
            data = first_member(dataset.raw(position[key]), IMAGE_EXTENSIONS)
            try:
                with Image.open(io.BytesIO(data)) as im:
                    thumb = im.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            except Exception:  # a corrupt sample: leave its cell empty
                continue
            sheet.paste(thumb, (_LABEL_WIDTH + c * (cell + 4), y))
    return sheet
