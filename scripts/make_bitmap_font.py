#!/usr/bin/env python3
"""Rasterise printable ASCII of DejaVu Sans into the 8-bit alpha atlas that the PNG plots use
(`crates/recipe/src/font/dejavu-sans-*.bin`), so plotting needs no font at run time.

Format: u8 height, u8 baseline (pixels from the top), then for each of ASCII 32..=126:
u8 advance width, then advance × height alpha bytes, row-major.
DejaVu fonts: Bitstream Vera licence (free redistribution of derived glyphs), see
/usr/share/doc/fonts-dejavu-core/copyright.

usage: .venv/bin/python scripts/make_bitmap_font.py [SIZE_PX ...]   (needs pillow)
"""
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
for size in [int(a) for a in sys.argv[1:]] or [11, 13]:
    font = ImageFont.truetype(FONT, size)
    ascent, descent = font.getmetrics()
    height = ascent + descent
    out = bytearray([height, ascent])
    for code in range(32, 127):
        ch = chr(code)
        adv = max(1, round(font.getlength(ch)))
        img = Image.new("L", (adv, height), 0)
        ImageDraw.Draw(img).text((0, 0), ch, font=font, fill=255)
        out.append(adv)
        out += img.tobytes()
    path = f"crates/recipe/src/font/dejavu-sans-{size}.bin"
    with open(path, "wb") as f:
        f.write(out)
    print(path, len(out), "bytes", file=sys.stderr)
