"""Coalescing: calls running side by side that each need one answer of a batch-capable lookup, answered by
one batch call.

Why: ranking a few users at once costs about half a lone user's CPU each (one ANN search, one set of array
operations for all of them; :meth:`notify_core.recommend.recommender.Recommender.recommend_each`), and a
serving process under load always has several requests waiting. But a request is handled by ordinary
synchronous code (the handler edge, Powertools' routing and validation, the reply), which cannot be split
around the one call that should be shared without rewriting it. So each call of a batch
(:func:`run_together`) runs in its own greenlet, and :func:`ask` *parks* it: once every call of the batch has
finished or parked, each resolver is called once with all its parked items, and each call resumes with its
own answer (or raises its own error) where it parked. The calls take turns on one thread, so nothing runs at
the same time; each has its own ``contextvars`` context (request ids, the edge's request state).

Outside :func:`run_together`, :func:`ask` is the resolver called with the one item: a Lambda invocation, a
test or a CLI call runs exactly as before.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")
R = TypeVar("R")

Resolver = Callable[[Sequence[Any]], Sequence[Any]]
"""Answers a list of items, one answer (a value, or the exception that item's caller must raise) per item,
in order. Parked items are grouped by resolver equality: a bound method of one object is one resolver."""


class _Call(greenlet.greenlet):  # type: ignore[misc]  # greenlet's stubs do not mark the class subclassable
    """One call of :func:`run_together`: :func:`ask` parks these, and only these."""


@dataclass(frozen=True, slots=True)
class _Parked:
    resolver: Resolver
    item: Any


def ask(resolver: Callable[[Sequence[T]], Sequence[R | Exception]], item: T) -> R:
    """``resolver([item])[0]`` (raised if it is an exception). Inside :func:`run_together`, the answer comes
    from one call of ``resolver`` with every item the batch's calls asked it for."""
    current = greenlet.getcurrent()
    parked = isinstance(current, _Call)
    answer = current.parent.switch(_Parked(resolver, item)) if parked else resolver([item])[0]
    if isinstance(answer, Exception):
        raise answer
    return answer


def run_together(calls: Sequence[Callable[[], R]]) -> list[R | Exception]:
    """Run ``calls`` (each with no arguments) as one batch: what each returned, or the exception it raised,
    in order. Each call's :func:`ask`\\ s are answered by one resolver call a turn (see the module doc); a
    resolver that raises answers every item of its call with that exception."""
    results: list[Any] = [None] * len(calls)
    parked: dict[Hashable, list[tuple[int, _Call, Any]]] = {}

    def step(i: int, call: _Call, *answer: Any) -> None:
        """Start call ``i`` (no answer) or resume it with its answer, until it finishes or parks again."""
        try:
            out = call.switch(*answer)
        except Exception as exc:
            results[i] = exc
            return
        if call.dead:
            results[i] = out
        else:
            parked.setdefault(out.resolver, []).append((i, call, out.item))

    for i, fn in enumerate(calls):
        call = _Call(fn)
        call.gr_context = contextvars.copy_context()
        step(i, call)
    while parked:
        resolver = next(iter(parked))  # in the order the resolvers were first asked
        waiting = parked.pop(resolver)
        try:
            answers: Sequence[Any] = resolver([item for _, _, item in waiting])
            if len(answers) != len(waiting):
                raise RuntimeError(f"a resolver answered {len(answers)} of {len(waiting)} items")
        except Exception as exc:
            answers = [exc] * len(waiting)
        for (i, call, _), answer in zip(waiting, answers, strict=True):
            step(i, call, answer)
    return results
