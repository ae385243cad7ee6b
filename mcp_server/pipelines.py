"""Redis commands of one call sent together: each part queues its commands on a pipeline, one pipeline per
server, all sent at once (used by the answer cache and the query-seconds budget)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis


async def one_trip(*parts: tuple[aioredis.Redis, Callable[[Any], None]]) -> list[list[Any] | BaseException]:
    """Each part queues its commands (`read`, `write`...) on a pipeline of its Redis; every pipeline is
    sent at once (one per server, the servers concurrently): one round trip for independent commands.
    Per part, its replies, or the error that stopped its server's pipeline."""
    pipes: dict[int, Any] = {}
    spans = []
    for client, queue in parts:
        if id(client) not in pipes:
            pipes[id(client)] = client.pipeline(transaction=False)
        pipe = pipes[id(client)]
        start = len(pipe)
        queue(pipe)
        spans.append((id(client), start, len(pipe)))
    replies = dict(zip(pipes, await asyncio.gather(*(sent(pipe) for pipe in pipes.values())), strict=True))
    return [
        reply if isinstance(reply := replies[client], BaseException) else reply[start:end]
        for client, start, end in spans
    ]


async def sent(pipe: Any) -> list[Any] | BaseException:
    """The replies of a pipeline's commands (an error in place of a failed one), or the error that
    stopped it: in one round trip; what Redis trouble means is the caller's to say."""
    try:
        return list(await pipe.execute(raise_on_error=False))
    except Exception as error:  # noqa: BLE001
        return error


def failure(replies: list[Any] | BaseException) -> str | None:
    """The name of the first error in `sent`'s answer, None when every command succeeded."""
    if isinstance(replies, BaseException):
        return type(replies).__name__
    return next((type(reply).__name__ for reply in replies if isinstance(reply, BaseException)), None)
