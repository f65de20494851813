"""The terms that weights carry, and how they pass on to the weights made from them.

dessam's code is Apache-2.0 (the LICENSE file). Its weights carry the terms of what they were made
from, and dessam treats those terms as passing on:
- weights trained on data under non-commercial terms (a licence with an NC part: CC BY-NC,
  CC BY-NC-SA) carry those terms; so does every model that starts from such weights (`--init`) or
  needs them again to run (a DES-SAM model runs its teacher at every prediction). ShareAlike (SA)
  asks that what is made from them is shared under the same terms;
- data and weights whose terms put no condition on the weights made from them (CC0, Apache-2.0)
  leave those weights under dessam's own Apache-2.0.

A weight file records its `Terms` (`to_dict`); commands name them in one line when they are
non-commercial (`Terms.words`). This is how dessam labels what it ships and writes, not legal advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

PERMISSIVE = "Apache-2.0"
NON_COMMERCIAL = "NC"   # the part of a licence id that forbids commercial use (CC-BY-NC-4.0, CC-BY-NC-SA-4.0)
# Terms that have no SPDX id get a `LicenseRef-` id (SPDX's own way), said in words here. Data whose
# source states no licence is taken as research use only, non-commercial.
REFERENCES = {"LicenseRef-unstated-NC": "unstated terms"}


def is_non_commercial(licence: str) -> bool:
    """Whether a licence id (SPDX, e.g. CC-BY-NC-SA-4.0) forbids commercial use."""
    return NON_COMMERCIAL in str(licence).upper().replace("-", " ").replace("_", " ").split()


def spoken(licence: str) -> str:
    """A licence id as people write it: 'CC-BY-NC-SA-4.0' -> 'CC BY-NC-SA 4.0', a `REFERENCES` id in its
    words; others unchanged."""
    if licence in REFERENCES:
        return REFERENCES[licence]
    parts = str(licence).split("-")
    if len(parts) >= 3 and parts[0].upper() == "CC" and parts[-1][:1].isdigit():
        return f"CC {'-'.join(parts[1:-1])} {parts[-1]}"
    return str(licence)


@dataclass(frozen=True)
class Terms:
    """The licence of a weight file (an SPDX id; several joined by ' AND ') and, one phrase each,
    what it comes from."""

    licence: str
    sources: tuple = ()

    @property
    def non_commercial(self) -> bool:
        return any(is_non_commercial(part) for part in self.licence.split(" AND "))

    @property
    def words(self) -> str:
        """'non-commercial (CC BY-NC-SA 4.0)', or the permissive licence's name."""
        named = " and ".join(spoken(part) for part in self.licence.split(" AND "))
        return f"non-commercial ({named})" if self.non_commercial else named

    def notice(self, what: str, alternative: str) -> str:
        """The one line a command or widget shows when it uses non-commercial weights `what`:
        their terms and the permissive `alternative` (e.g. "--model pretrained-permissive")."""
        return f"{what} is {self.words}: research use only; {alternative} is {PERMISSIVE}"

    def to_dict(self) -> dict:
        return {"licence": self.licence, "sources": list(self.sources)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Terms":
        return cls(str(data["licence"]), tuple(data.get("sources") or ()))


def from_data(datasets: Mapping[str, str], what: str) -> Terms:
    """The terms of weights (`what`, e.g. "the teacher teacher.pt") trained on `datasets`
    ({name: licence id})."""
    restricted = {name: licence for name, licence in datasets.items() if is_non_commercial(licence)}
    if restricted:
        licences = sorted(set(restricted.values()))
        return Terms(" AND ".join(licences), (f"{what}: trained on {', '.join(restricted)} ({', '.join(licences)})",))
    licences = ", ".join(sorted(set(datasets.values()))) or "no data"
    return Terms(PERMISSIVE, (f"{what}: trained only on data whose terms put no condition on it ({licences})",))


def inherited(*parts: Terms) -> Terms:
    """The terms of weights made from all of `parts`: the non-commercial ones' if any, with what
    they come from (each source once: a model started from one on the same teacher and corpus names
    them twice); else Apache-2.0."""
    restricted = [part for part in parts if part.non_commercial]
    if not restricted:
        return Terms(PERMISSIVE, tuple(dict.fromkeys(source for part in parts for source in part.sources)))
    licences = sorted({licence for part in restricted for licence in part.licence.split(" AND ")})
    return Terms(" AND ".join(licences), tuple(dict.fromkeys(source for part in restricted for source in part.sources)))
