"""The fault test's verdict, kept apart from the processes so it can be read
(and tested) on its own.

Inputs are plain data gathered by the harness:
- `acked`: {record id: (partition, offset)} from the producers' delivery
  reports; only records the client was told are written.
- `reads`: a list of complete reads of the topic, each {partition: [(offset,
  id)]} in the order the consumer returned them.
- `live`: {(partition, offset): id} from consumers that read while the faults
  happened, plus `live_conflicts` they saw themselves (one offset, two ids).
- `hw_samples`: [(seconds, step, partition, high watermark, source)] in the
  order they were taken, from ListOffsets and from Fetch answers.

What Kafka promises with acks=all, replication factor 3 and
min.insync.replicas=2, and what is checked: every acknowledged record is in
every read, at its acknowledged offset (so acknowledged records also keep
their relative order); an offset never holds two different records, whoever
read it and when; the high watermark a consumer sees never goes backwards.
Duplicates (one id at two offsets) are allowed, since idempotence is off and
a retried batch may have been written the first time too; they are counted.
"""
from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class Verdict:
    acknowledged: int = 0
    present: int = 0
    lost: list = field(default_factory=list)        # (id, (p, offset), what is there instead)
    duplicates: int = 0                             # extra copies of an id in the first read
    duplicated_ids: int = 0
    conflicts: list = field(default_factory=list)   # (p, offset, {source: id})
    order_violations: list = field(default_factory=list)
    hw_regressions: list = field(default_factory=list)
    gaps: list = field(default_factory=list)        # (read, p, expected offset, got offset)
    produce_order_inversions: int = 0               # info: retries without idempotence reorder
    unacknowledged_present: int = 0                 # info: failed or timed out, yet written
    records_in_log: int = 0

    @property
    def ok(self):
        return not (self.lost or self.conflicts or self.order_violations or self.hw_regressions)

    def summary(self):
        return (f"acknowledged {self.acknowledged}, present {self.present}, lost {len(self.lost)}, "
                f"duplicates {self.duplicates} (of {self.duplicated_ids} ids); "
                f"records in the log {self.records_in_log}, unacknowledged but present "
                f"{self.unacknowledged_present}; offsets with two records {len(self.conflicts)}; "
                f"order violations {len(self.order_violations)}; high watermark regressions "
                f"{len(self.hw_regressions)}; offset gaps {len(self.gaps)}; produce-order "
                f"inversions (allowed, retries) {self.produce_order_inversions}")

    def details(self, limit=10):
        lines = []
        for name in ("lost", "conflicts", "order_violations", "hw_regressions", "gaps"):
            items = getattr(self, name)
            if items:
                lines.append(f"{name} ({len(items)}), first {min(limit, len(items))}:")
                lines += [f"  {item}" for item in items[:limit]]
        return "\n".join(lines)


def check(acked, reads, live=None, live_conflicts=(), hw_samples=()):
    v = Verdict(acknowledged=len(acked))
    live = live or {}
    # offset -> id per read, and every offset each id sits at.
    at = []
    for n, read in enumerate(reads):
        index = {}
        for p, records in read.items():
            expected = None
            for offset, rid in records:
                if expected is not None and offset != expected:
                    v.gaps.append((n, p, expected, offset))
                expected = offset + 1
                if (p, offset) in index and index[(p, offset)] != rid:
                    v.conflicts.append((p, offset, {f"read {n}": index[(p, offset)], f"read {n} again": rid}))
                index[(p, offset)] = rid
        at.append(index)

    # One offset, one record: across the reads and what live consumers saw.
    sources = defaultdict(dict)
    for n, index in enumerate(at):
        for key, rid in index.items():
            sources[key][f"read {n}"] = rid
    for key, rid in live.items():
        sources[key]["live"] = rid
    for (p, offset), seen in sorted(sources.items()):
        if len(set(seen.values())) > 1:
            v.conflicts.append((p, offset, seen))
    v.conflicts += list(live_conflicts)

    # Every acknowledged record at its offset in every read. librdkafka's
    # idempotent producer may acknowledge a record with no offset (its
    # persistence inferred from a later batch's answer): such a record must
    # be somewhere in its partition.
    for rid, (p, offset) in sorted(acked.items(), key=lambda kv: kv[0]):
        if offset is None:
            found = [any(r == rid for _, r in read.get(p, [])) for read in reads]
            if not found:
                continue
            if all(found):
                v.present += 1
            else:
                v.lost.append((rid, (p, offset), found))
            continue
        there = [index.get((p, offset)) for index in at]
        if not there:
            continue  # no complete read: nothing proven either way
        if all(x == rid for x in there):
            v.present += 1
        else:
            v.lost.append((rid, (p, offset), there))

    # Relative order: reading the log, acknowledged records come in the
    # order of their acknowledged offsets.
    for n, read in enumerate(reads):
        for p, records in read.items():
            last = -1
            for offset, rid in records:
                if acked.get(rid, (None,))[0] == p and acked[rid][1] == offset:
                    if offset <= last:
                        v.order_violations.append((n, p, rid, offset, last))
                    last = offset

    if reads:
        first = reads[0]
        counts = Counter(rid for records in first.values() for _, rid in records)
        v.records_in_log = sum(counts.values())
        v.duplicates = sum(c - 1 for c in counts.values() if c > 1)
        v.duplicated_ids = sum(1 for c in counts.values() if c > 1)
        v.unacknowledged_present = sum(1 for rid in counts if rid not in acked)

    by_partition = defaultdict(list)
    for rid, (p, offset) in acked.items():
        if offset is not None:
            by_partition[p].append((rid, offset))
    for items in by_partition.values():
        items.sort()
        v.produce_order_inversions += sum(1 for a, b in zip(items, items[1:]) if b[1] < a[1])

    # The high watermark as consumers saw it, per partition, never lower
    # than before; the final reads' end offsets count as the last sample.
    highest = {}
    final = [(None, "final read", p, records[-1][0] + 1, "read") for p, records in (reads[-1].items() if reads else []) if records]
    for t, step, p, hw, source in list(hw_samples) + final:
        prev = highest.get(p)
        if prev is not None and hw < prev[0]:
            v.hw_regressions.append({"partition": p, "was": prev[0], "seen in": prev[1], "now": hw,
                                     "during": step, "source": source, "at_s": t})
        if prev is None or hw > prev[0]:
            highest[p] = (hw, step)
    return v


def _self_test():
    acked = {1: (0, 0), 2: (0, 1), 3: (1, 0)}
    good = {0: [(0, 1), (1, 2), (2, 9)], 1: [(0, 3)]}
    assert check(acked, [good, good]).ok
    lost = check(acked, [good, {0: [(0, 1), (1, 7)], 1: [(0, 3)]}])
    assert len(lost.lost) == 1 and lost.conflicts and not lost.ok
    dup = check(acked, [{0: [(0, 1), (1, 2), (2, 2)], 1: [(0, 3)]}])
    assert dup.ok and dup.duplicates == 1
    hw = check(acked, [good], hw_samples=[(0, "a", 0, 3, "x"), (1, "b", 0, 2, "x")])
    assert len(hw.hw_regressions) == 1 and not hw.ok
    live = check(acked, [good], live={(0, 2): 5})
    assert live.conflicts and not live.ok


if __name__ == "__main__":
    _self_test()
    print("fault_checker self-test ok")
