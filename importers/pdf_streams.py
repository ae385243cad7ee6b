"""Caps on how far a PDF's streams may inflate. pdfminer decodes a stream whole, in one call, so a 1 MB
Flate stream of zeros becomes 1 GB in memory; every stream is first inflated here, incrementally and
without keeping the output, and refused as soon as it passes the cap."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pdfminer import pdftypes
from pdfminer.ascii85 import ascii85decode, asciihexdecode
from pdfminer.lzw import LZWDecoder
from pdfminer.pdftypes import (
    LITERALS_ASCII85_DECODE,
    LITERALS_ASCIIHEX_DECODE,
    LITERALS_FLATE_DECODE,
    LITERALS_LZW_DECODE,
    LITERALS_RUNLENGTH_DECODE,
    PDFStream,
)
from pdfminer.runlength import rldecode

from core.errors import InvalidInput

_PIECE_BYTES = 1_048_576  # inflate at most this much at a time


class StreamBudget:
    """What the streams of one PDF may inflate to: each at most `per_stream` bytes, all together `total`."""

    def __init__(self, per_stream: int, total: int) -> None:
        self.per_stream = per_stream
        self.total = total
        self.spent = 0
        self.where = "the PDF's structure"  # then the page being read, for the refusal message
        self.refusal: InvalidInput | None = None  # kept: pdfminer and pdfplumber wrap errors they see

    def limit(self) -> int:
        return max(0, min(self.per_stream, self.total - self.spent))

    def refuse(self, limit: int) -> InvalidInput:
        if limit < self.per_stream:
            self.refusal = InvalidInput(
                f"the PDF's streams inflate past {self.total:,} bytes in all (by {self.where}; the import "
                "limit, IMPORT_MAX_BYTES); import fewer pages with options.pages"
            )
        else:
            self.refusal = InvalidInput(
                f"a stream of {self.where} inflates past {limit:,} bytes (the import limit, "
                "IMPORT_MAX_STREAM_BYTES); refused as a possible decompression bomb"
            )
        return self.refusal


_budget: ContextVar[StreamBudget | None] = ContextVar("pdf_stream_budget", default=None)


@contextmanager
def stream_budget(per_stream: int, total: int) -> Iterator[StreamBudget]:
    """While the block runs (in this thread or context), every PDF stream decoded is held to the caps."""
    budget = StreamBudget(per_stream, total)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def _bounded_decode(stream: PDFStream) -> None:
    budget = _budget.get()
    if budget is None:
        _pdfminer_decode(stream)
        return
    if budget.refusal is not None:
        raise budget.refusal
    limit = budget.limit()
    if _inflates_past(stream, limit):
        raise budget.refuse(limit)
    _pdfminer_decode(stream)  # now known to stay within the limit
    size = len(stream.data or b"")
    if size > limit:  # a filter not measured above (images pdfplumber never asks for)
        stream.data = b""
        raise budget.refuse(limit)
    budget.spent += size


def _inflates_past(stream: PDFStream, limit: int) -> bool:
    """Whether decoding `stream` would give more than `limit` bytes; measured step by step, the output of a
    step kept only when another step follows it."""
    data = stream.rawdata
    if data is None:
        return False
    if stream.decipher is not None and stream.objid is not None and stream.genno is not None:
        data = stream.decipher(stream.objid, stream.genno, data, stream.attrs)
    filters = stream.get_filters()
    for position, (name, _) in enumerate(filters):
        keep = position < len(filters) - 1
        if name in LITERALS_FLATE_DECODE:
            pieces = _inflated(data)
        elif name in LITERALS_LZW_DECODE:
            pieces = LZWDecoder(io.BytesIO(data)).run()
        elif name in LITERALS_RUNLENGTH_DECODE:
            if _runlength_size(data) > limit:
                return True
            pieces = iter([rldecode(data)])
        elif name in LITERALS_ASCII85_DECODE:
            zeros = data.count(b"z")  # each 'z' stands for four zero bytes
            if 4 * zeros + (len(data) - zeros) * 4 // 5 > limit:
                return True
            pieces = iter([ascii85decode(data)])
        elif name in LITERALS_ASCIIHEX_DECODE:
            pieces = iter([asciihexdecode(data)])
        else:
            return False  # image codecs pdfminer leaves encoded, or a filter it refuses itself
        size, kept = 0, []
        for piece in pieces:
            size += len(piece)
            if size > limit:
                return True
            if keep:
                kept.append(piece)
        data = b"".join(kept)
    return False


def _inflated(data: bytes) -> Iterator[bytes]:
    """Flate output in pieces of at most _PIECE_BYTES; stops where the data ends or breaks (pdfminer then
    recovers no more than the bytes before the break)."""
    inflater = zlib.decompressobj()
    tail = data
    try:
        while not inflater.eof:
            piece = inflater.decompress(tail, _PIECE_BYTES)
            tail = inflater.unconsumed_tail
            if not piece and not tail:
                return
            yield piece
    except zlib.error:
        return


def _runlength_size(data: bytes) -> int:
    size = position = 0
    while position < len(data):
        length = data[position]
        if length == 128:  # end of data
            break
        if length < 128:
            size += length + 1
            position += length + 2
        else:
            size += 257 - length
            position += 2
    return size


def _decompress_corrupted(data: bytes) -> bytes:
    """pdfminer's recovery for a Flate stream with a bad checksum, in linear time: its own feeds one byte
    at a time and joins the output quadratically (minutes for a few MB). Same result: what inflates before
    the break, or zlib.error when the break is before the last three bytes."""
    inflater = zlib.decompressobj()
    split = max(len(data) - 3, 0)
    recovered = inflater.decompress(data[:split])  # an error here propagates, as in pdfminer
    for position in range(split, len(data)):
        try:
            recovered += inflater.decompress(data[position : position + 1])
        except zlib.error:
            break
    return recovered


_pdfminer_decode = PDFStream.decode
# Installed once, when the importers load: pdfminer creates its streams itself, so its decode is the one
# place every stream passes through. Outside stream_budget() both behave as pdfminer's own.
PDFStream.decode = _bounded_decode  # type: ignore[method-assign,assignment]
pdftypes.decompress_corrupted = _decompress_corrupted
