"""One case of the hostile-input corpus, and the MNIST digits the legitimate ones are made of."""

from __future__ import annotations

from dataclasses import dataclass, field

# MNIST test-set indices used as the "real digit" of each legitimate case. They are the first
# ones of the test set, so anyone can look them up; their labels are read from the IDX file.
DIGIT_INDICES = (0, 1, 2, 3, 4, 5, 6, 7)


@dataclass(frozen=True)
class Case:
    """One hostile or unusual request."""

    id: str
    body: bytes = field(repr=False)
    content_type: str
    expect: str  # "reject" | "digit" | "prediction"
    label: int | None = None
    status: int | None = None  # exact status required (otherwise any 4xx for "reject")
    note: str = ""

    def __post_init__(self) -> None:
        if self.expect not in {"reject", "digit", "prediction"}:
            raise ValueError(f"case {self.id}: unknown expectation {self.expect!r}")
        if self.expect == "digit" and self.label is None:
            raise ValueError(f"case {self.id}: a 'digit' case needs its label")
