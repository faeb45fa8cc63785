"""Small-cell and complementary suppression, applied to every group-level output.

A group or count with fewer patients than the configured minimum is never
shown. Complementary suppression then hides further counts, so that a hidden
one cannot be worked out by subtracting shown counts from a shown total.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

DEFAULT_MIN_GROUP_SIZE = 10
SUPPRESSED = "suppressed"

Cell = Hashable
Sum = tuple[Cell, tuple[Cell, ...]]


def min_group_size(config: Mapping[str, Any]) -> int:
    """Return the minimum reportable group size from ``config['disclosure']``."""
    value = int((config.get("disclosure") or {}).get("min_group_size", DEFAULT_MIN_GROUP_SIZE))
    if value < 1:
        raise ValueError(f"disclosure.min_group_size must be at least 1, got {value}")
    return value


def is_reportable(count: int, minimum: int) -> bool:
    """Return whether a group of ``count`` patients may be shown."""
    return int(count) >= int(minimum)


@dataclass(frozen=True)
class Suppression:
    """Outcome of :func:`suppress_complementary`.

    Attributes
    ----------
    hidden : frozenset
        Printable cells to suppress: the small ones and their partners.
    unresolved : tuple of (total, members)
        Sums that still give a protected count away because every count they
        rely on is always published, as in a cohort smaller than the minimum.
    """

    hidden: frozenset
    unresolved: tuple[Sum, ...]


def suppress_complementary(
    counts: Mapping[Cell, int],
    sums: Iterable[tuple[Cell, Sequence[Cell]]],
    minimum: int,
    *,
    published: Iterable[Cell] = (),
    implied: Iterable[Cell] = (),
    unprotected: Iterable[Cell] = (),
    hidden_with: Mapping[Cell, Iterable[Cell]] | None = None,
    spare: Iterable[Cell] = (),
    revealed_by: Mapping[Cell, Cell] | None = None,
    prefer_shared: bool = False,
) -> Suppression:
    """Choose the printable counts to suppress so that no protected count can be worked out.

    The reader is assumed to subtract along one sum at a time, reusing what
    earlier sums revealed. A sum whose total is known gives its only unknown
    member. When its known members already reach the total, it gives its
    unknown members as 0, and a sum whose members are all known gives its
    total. A printable count from 1 to ``minimum - 1`` is suppressed.
    Partners are then suppressed until no sum gives away a suppressed count or
    a protected implied count, and no sum with a known total leaves its
    unknown members adding up to 1 to ``minimum - 1``. Unknown members that
    are all ``unprotected`` may add up to any number.

    Each pass takes the sums that give something away at the smallest depth.
    A printed count has depth 0, and a worked-out one has one more than the
    deepest count its sum used. Each of these sums gets one partner, unless
    it shares a cell with the sums of a partner already chosen in the pass.
    The partner is a printed non-zero count of the sum or, when the sum has
    none, of the nearest sums that revealed the counts it used. Among those
    candidates the partner is, in this order, not spared, the smallest, in
    the most other sums that give something away, and the first in
    ``counts``. With ``prefer_shared`` the other sums come before the size.
    A printed 0 is never suppressed, because hiding it changes no remainder.

    Not protected: counts found by solving several sums together as a system
    of equations, and bounds that follow from counts being non-negative.

    Parameters
    ----------
    counts : mapping
        Every cell's count, in patients. A cell is printable unless it is in
        ``published``, ``implied`` or ``unprotected``.
    sums : iterable of (total, members)
        Each states that the total cell's count is the sum of its members'.
    minimum : int
        Smallest count that may be shown, in patients.
    published : iterable, optional
        Cells that are always printed and never suppressed, such as the
        cohort size.
    implied : iterable, optional
        Cells that are never printed but can be worked out by subtraction. One
        counting from 1 to ``minimum - 1`` patients is protected.
    unprotected : iterable, optional
        Cells that are never printed and never protected, whatever their
        count, but that a reader may work out and subtract along, such as a
        shown group's count of patients with an unknown label. A cell may not
        be both ``unprotected`` and ``published`` or ``implied``.
    hidden_with : mapping, optional
        For a cell, the cells to suppress whenever it is suppressed, such as
        the intersection groups that contain a hidden group.
    spare : iterable, optional
        Printable cells chosen as partners only when a sum offers no other,
        such as a configured reference group.
    revealed_by : mapping, optional
        For an implied cell, the printable cell that gives it away while that
        cell is printed with a non-zero count, as a count printed with its
        percentage of a total gives the total away. Suppressing the printable
        cell takes the implied one out of print.
    prefer_shared : bool, optional
        Whether a partner that also stops other sums is chosen before a
        smaller one. That suits a table of independent cells, where it
        suppresses fewer counts. Without it the smallest count goes first,
        which suits groups, whose intersections are suppressed with them.

    Returns
    -------
    Suppression
        The cells to suppress and the sums that no suppression can fix.

    Raises
    ------
    ValueError
        When a sum or ``revealed_by`` names a cell without a count, or a cell
        is both ``unprotected`` and ``published`` or ``implied``.

    Examples
    --------
    Hiding the 4 alone would leave it as 100 minus 60 minus 36:

    >>> counts = {"all": 100, "male": 60, "female": 36, "other": 4}
    >>> result = suppress_complementary(counts, [("all", ("male", "female", "other"))], 10, published=["all"])
    >>> sorted(result.hidden)
    ['female', 'other']
    """
    ledger = _Ledger(
        counts, sums, int(minimum), published, implied, unprotected, hidden_with or {}, spare, revealed_by or {}, prefer_shared
    )
    return ledger.protect()


class _Ledger:
    """The cells and sums of one call of :func:`suppress_complementary`."""

    def __init__(
        self,
        counts: Mapping[Cell, int],
        sums: Iterable[tuple[Cell, Sequence[Cell]]],
        minimum: int,
        published: Iterable[Cell],
        implied: Iterable[Cell],
        unprotected: Iterable[Cell],
        hidden_with: Mapping[Cell, Iterable[Cell]],
        spare: Iterable[Cell],
        revealed_by: Mapping[Cell, Cell],
        prefer_shared: bool,
    ) -> None:
        self.counts = {cell: int(count) for cell, count in counts.items()}
        self.sums: list[Sum] = list(dict.fromkeys((total, tuple(members)) for total, members in sums))
        self.minimum = minimum

        self.published = set(published)
        self.implied = set(implied)
        self.unprotected = set(unprotected)
        overlap = self.unprotected & (self.published | self.implied)
        if overlap:
            raise ValueError(
                f"Cells are both unprotected and published or implied: {sorted(map(str, overlap))[:5]}. "
                "Pass each cell in one of published, implied and unprotected."
            )
        self.hidden_with = {cell: tuple(others) for cell, others in hidden_with.items()}
        self.spare = set(spare)
        self.revealed_by = dict(revealed_by)
        self.prefer_shared = prefer_shared

        named = {cell for total, members in self.sums for cell in (total, *members)}
        named |= set(self.revealed_by) | set(self.revealed_by.values())
        missing = named - set(self.counts)
        if missing:
            raise ValueError(
                f"Sums or revealed_by name cells without a count: {sorted(map(str, missing))[:5]}. "
                "Give every cell they name a count."
            )

        self.sums_of: dict[Cell, list[int]] = {}
        for index, (total, members) in enumerate(self.sums):
            for cell in (total, *members):
                self.sums_of.setdefault(cell, []).append(index)
        self.order = {cell: position for position, cell in enumerate(self.counts)}
        self.hidden: set[Cell] = set()

    def is_printable(self, cell: Cell) -> bool:
        return cell not in self.published and cell not in self.implied and cell not in self.unprotected

    def is_in_print(self, cell: Cell) -> bool:
        """Return whether a reader sees the count of ``cell`` without subtracting."""
        if cell in self.published:
            return True
        if self.is_printable(cell):
            return cell not in self.hidden
        revealer = self.revealed_by.get(cell)
        return revealer is not None and self.is_in_print(revealer) and self.counts[revealer] > 0

    def is_protected(self, cell: Cell) -> bool:
        """Return whether a reader must not work out ``cell``: a suppressed count or a small implied one."""
        if cell in self.hidden:
            return True
        return cell in self.implied and 0 < self.counts[cell] < self.minimum

    def partner_for(self, cell: Cell) -> Cell | None:
        """Return the printed cell to suppress so that ``cell`` leaves print, or None when none can be."""
        if not self.is_in_print(cell) or cell in self.published:
            return None
        if self.is_printable(cell):
            return cell if self.counts[cell] > 0 else None
        return self.partner_for(self.revealed_by[cell])

    def hide(self, cell: Cell) -> None:
        """Suppress ``cell`` and, repeatedly, the cells to be suppressed with it."""
        pending = [cell]
        while pending:
            current = pending.pop()
            if current in self.hidden or not self.is_printable(current):
                continue
            self.hidden.add(current)
            pending.extend(self.hidden_with.get(current, ()))

    def protect(self) -> Suppression:
        """Suppress the small printable counts, then partners until no sum gives anything away."""
        for cell, count in self.counts.items():
            if self.is_printable(cell) and 0 < count < self.minimum:
                self.hide(cell)
        unresolved: set[int] = set()
        while True:
            known, source, depth = self._derive()
            violations = [(used, index) for used, index in self._violations(known, source, depth) if index not in unresolved]
            if not violations:
                break
            self._add_partners(violations, known, source, unresolved)
        return Suppression(frozenset(self.hidden), tuple(self.sums[index] for index in sorted(unresolved)))

    def _add_partners(
        self,
        violations: Sequence[tuple[int, int]],
        known: Mapping[Cell, int],
        source: Mapping[Cell, int],
        unresolved: set[int],
    ) -> None:
        """Suppress one partner for each of the shallowest ``violations``, adding sums without one to ``unresolved``.

        Handling several sums per pass saves derivations. A sum that shares a
        cell with the sums of a partner chosen in this pass waits for the
        next pass, because that partner may already have changed it.
        """
        violating = {index for _, index in violations}
        shallowest = violations[0][0]
        touched: set[Cell] = set()
        for used, index in violations:
            if used > shallowest:
                break
            if touched.intersection(self._cells(index)):
                continue
            candidates, visited = self._search_back(index, known, source)
            if not candidates:
                unresolved.add(index)
                continue
            others = violating - visited

            def cost(cell: Cell) -> tuple[bool, int, int, int]:
                # A partner that also sits in another sum giving something
                # away serves both.
                shared = -sum(1 for other in self.sums_of.get(cell, ()) if other in others)
                if self.prefer_shared:
                    return (cell in self.spare, shared, self.counts[cell], self.order[cell])
                return (cell in self.spare, self.counts[cell], shared, self.order[cell])

            partner = min(candidates, key=cost)
            self.hide(partner)
            for other in self.sums_of.get(partner, ()):
                touched.update(self._cells(other))

    def _derive(self) -> tuple[dict[Cell, int], dict[Cell, int], dict[Cell, int]]:
        """Return the counts a reader can work out, the sum that gave each one not in print, and its depth.

        A count in print has depth 0, and a worked-out one has one more than
        the deepest count its sum used.
        """
        known = {cell: count for cell, count in self.counts.items() if self.is_in_print(cell)}
        source: dict[Cell, int] = {}
        depth = dict.fromkeys(known, 0)
        pending = deque(range(len(self.sums)))
        queued = set(pending)
        while pending:
            index = pending.popleft()
            queued.discard(index)
            total, members = self.sums[index]
            unknown = [member for member in members if member not in known]
            found: list[Cell] = []
            if total in known:
                remainder = known[total] - sum(known[member] for member in members if member in known)
                # When the known members already reach the total, the unknown ones are all 0.
                if len(unknown) == 1 or (unknown and remainder == 0):
                    found = unknown
            elif not unknown:
                found = [total]
            if not found:
                continue
            used = 1 + max((depth[cell] for cell in (total, *members) if cell in known), default=0)
            for cell in found:
                known[cell] = self.counts[cell]
                source[cell] = index
                depth[cell] = used
                for other in self.sums_of[cell]:
                    if other not in queued:
                        pending.append(other)
                        queued.add(other)
        return known, source, depth

    def _violations(
        self, known: Mapping[Cell, int], source: Mapping[Cell, int], depth: Mapping[Cell, int]
    ) -> list[tuple[int, int]]:
        """Return ``(depth, sum index)`` for each sum that gives something away, shallowest first.

        The depth is that of the deepest worked-out count the sum uses. A
        partner in a shallow sum also stops the deeper sums that build on
        what it reveals.
        """
        found = []
        for index, (total, members) in enumerate(self.sums):
            cells = (total, *members)
            revealing = False
            if total in known:
                unknown = [member for member in members if member not in known]
                remainder = known[total] - sum(known[member] for member in members if member in known)
                # Unknown members that are all unprotected may add up to anything.
                protectable = any(member not in self.unprotected for member in unknown)
                revealing = protectable and 0 < remainder < self.minimum
            if not revealing:
                revealing = any(source.get(cell) == index and self.is_protected(cell) for cell in cells)
            if revealing:
                used = max((depth[cell] for cell in cells if cell in known and source.get(cell) != index), default=0)
                found.append((used, index))
        return sorted(found)

    def _search_back(self, start: int, known: Mapping[Cell, int], source: Mapping[Cell, int]) -> tuple[set[Cell], set[int]]:
        """Return the partners that sum ``start``, or the nearest sums that revealed the counts it used, offer, and the sums searched.

        The search first moves back only along non-zero counts, because a
        partner that takes a 0 out of print leaves every remainder as it was.
        """
        for follow_zeros in (False, True):
            visited = {start}
            frontier = [start]
            while frontier:
                found = {partner for index in frontier for cell in self._cells(index) if (partner := self.partner_for(cell)) is not None}
                if found:
                    return found, visited
                earlier = {
                    source[cell]
                    for index in frontier
                    for cell in self._cells(index)
                    if cell in source and source[cell] not in visited and (follow_zeros or known[cell] > 0)
                }
                visited |= earlier
                frontier = sorted(earlier)
        return set(), visited

    def _cells(self, index: int) -> tuple[Cell, ...]:
        total, members = self.sums[index]
        return (total, *members)
