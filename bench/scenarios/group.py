"""``group``: fan-out to a group's online members, against the bare broadcasts in the same run.

Cases, for each group size (1,000 and 10,000 members online; ``--connections`` picks one
size instead; ``--tiny`` 8):

* ``broadcast-plain-N``: the bare trio-websocket broadcast (``send_message`` to each
  subscriber), one publisher and N subscribers: the reference.
* ``broadcast-fast-N``: the same with one pre-built frame written straight to each socket
  (``bench.baseline.fastwrite``): the second baseline, the transport's floor.
* ``rivet-N``: a group of N + 1 members (made through the server before the run), the
  publisher one of them, or of N members (the publisher and N - 1 others) where N + 1 would
  pass the protocol's largest group (``MAX_GROUP_MEMBER_LIMIT``, 10,000). Each
  ``msg.send`` is committed, acknowledged and delivered to every member's connection. The
  unit is a delivery to a member other than the sender (the sender's own copy is not
  counted, as the bare publisher's echo is not); ``--window`` bounds the messages not yet
  delivered to every member, end to end, as for the bare publisher.
"""

from __future__ import annotations

from bench import patterns
from bench.context import CaseResult, Options, RunContext
from bench.rivet_server import create_group, rivet_spec, users_of
from bench.scenarios import Case, CaseFn, register
from bench.scenarios._rivet import bare_broadcast, connect_timeout, load
from protocol import limits

SIZES = (1000, 10_000)
TINY_SIZE = 8
WINDOW = 4
TINY_MESSAGES = 20


def _sizes(options: Options) -> tuple[int, ...]:
    if options.connections is not None:
        return (options.connections,)
    return (TINY_SIZE,) if options.tiny else SIZES


def _shape(ctx: RunContext, size: int) -> patterns.Load:
    return load(
        ctx, connections=size, tiny_messages=TINY_MESSAGES, window=WINDOW, rate=ctx.options.rate
    )


def _bare(size: int, fast: bool) -> CaseFn:
    def run(ctx: RunContext) -> CaseResult:
        label = f"broadcast-{'fast' if fast else 'plain'}-{size}"
        return bare_broadcast(ctx, _shape(ctx, size), fast, label)

    return run


def _rivet(size: int) -> CaseFn:
    def run(ctx: RunContext) -> CaseResult:
        others = min(size, limits.MAX_GROUP_MEMBER_LIMIT - 1)
        shape = _shape(ctx, others)
        group = others + 1
        spec = rivet_spec(
            f"rivet-group-{size}", users=group, group_members=group, connections=group
        )
        with ctx.server(spec) as server:
            publisher, *members = users_of(ctx, server, group)
            conv = create_group(server.url, publisher, [m.user_id for m in members])

            def extra(role: str, first: int, count: int) -> dict[str, object]:
                if role == "publisher":
                    return {"token": publisher.access_token, "conv": conv}
                return {
                    "conv": conv,
                    "tokens": [m.access_token for m in members[first : first + count]],
                }

            result = patterns.fan_out(
                ctx,
                server,
                shape,
                publisher_workload="bench.rivet_workloads:group_publisher",
                subscriber_workload="bench.rivet_workloads:group_member",
                label=f"rivet-{size}",
                extra=extra,
                connect_timeout=connect_timeout(size),
            )
        result.figures["group_members"] = group
        return result

    return run


@register("group", "Rivet group fan-out to 1,000 and 10,000 online members, against bare broadcast")
def group_cases(options: Options) -> list[Case]:
    cases: list[Case] = []
    for size in _sizes(options):
        plain, fast = f"broadcast-plain-{size}", f"broadcast-fast-{size}"
        cases += [
            Case(plain, f"bare broadcast to {size} subscribers, send_message", _bare(size, False)),
            Case(
                fast,
                f"bare broadcast to {size} subscribers, one frame written to every socket",
                _bare(size, True),
                plain,
            ),
            Case(
                f"rivet-{size}",
                f"msg.send to a group with {size} other members online, committed then fanned out",
                _rivet(size),
                plain,
            ),
        ]
    return cases
