"""transformers releases known to break BLIP-2, each with its evidence, and evalkit's declared support range."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Breakage:
    """Releases matching ``versions`` (a PEP 440 specifier) and what goes wrong there, with where it is shown."""

    versions: str
    what: str
    evidence: str


KNOWN_BREAKAGES = (
    Breakage(">=4.52.1,<4.53", "BLIP-2 captions collapse (\"a\" instead of \"two cats laying on a couch\"; "
             "reported on 4.52.1-4.52.4, 4.51.3 fine; evalkit's golden answers differ on 4.52.4 for every "
             "bundled model, docs/COMPATIBILITY.md)",
             "https://github.com/huggingface/transformers/issues/38858"),
    Breakage(">=4.45,<4.46", "expanding the image tokens in the processor breaks BLIP-2 batched generation "
             "(reported on 4.45.2)",
             "https://github.com/huggingface/transformers/issues/34223"),
)


def breakages_for(installed: str) -> list[Breakage]:
    """The known breakages that match an installed transformers version."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return [b for b in KNOWN_BREAKAGES if Version(installed) in SpecifierSet(b.versions)]


def breakage_reasons(installed: str | None = None) -> list[str]:
    """run.json's not-reportable reasons for the installed transformers: one per known breakage it matches."""
    from importlib.metadata import version

    installed = installed or version("transformers")
    return [f"transformers {installed} is known to break BLIP-2: {b.what} [{b.evidence}]"
            for b in breakages_for(installed)]


def declared_range() -> str | None:
    """The transformers specifier evalkit's installed metadata declares (pyproject.toml), e.g. '>=4.50,<=5.25'."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        requirements = requires("evalkit") or []
    except PackageNotFoundError:
        return None
    for line in requirements:
        requirement = Requirement(line)
        if requirement.name == "transformers" and not requirement.marker:
            return str(requirement.specifier)
    return None


def in_declared_range(installed: str, declared: str | None) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return declared is None or Version(installed) in SpecifierSet(declared)
