"""What the reliability verifier found: its counts and the first problems."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_PROBLEMS = 30  # problems kept for the message; all are counted


@dataclass
class Report:
    commands: int = 0  # records on the commands topic
    valid: int = 0
    malformed: int = 0
    resent: int = 0  # command records whose command id was seen before
    dedupe_replies: int = 0  # answered from the dedupe memory, identical to the first
    events_expected: int = 0
    events_found: int = 0
    lost: int = 0
    duplicated: int = 0
    index_expected: int = 0
    index_found: int = 0
    replies: int = 0
    missing_replies: int = 0
    extra_replies: int = 0
    dead_letters: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # reply error codes (and "ok")
    reasons: Counter[str] = field(default_factory=Counter)  # dlq-reason of each dead letter
    # correlation id -> dlq-reason, for each dead letter of a command record
    dead_letter_reasons: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def summary(self) -> str:
        return (
            f"commands={self.commands} (valid {self.valid}, malformed {self.malformed}, "
            f"re-sent ids {self.resent}, answered from dedupe {self.dedupe_replies}) "
            f"events expected={self.events_expected} found={self.events_found} "
            f"lost={self.lost} duplicated={self.duplicated} "
            f"index expected={self.index_expected} found={self.index_found} "
            f"replies={self.replies} missing={self.missing_replies} extra={self.extra_replies} "
            f"dead letters={self.dead_letters} {dict(sorted(self.reasons.items()))} "
            f"outcomes={dict(sorted(self.errors.items()))} problems={self.problem_count}"
        )
