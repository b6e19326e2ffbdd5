"""The generated config reference: docs/config.md is what the schemas generate today, and every key of every fixed
section, nested table and registered component is in it under its own heading."""

from pathlib import Path

from pydantic import BaseModel

from pyro_lvm.config.reference import FIXED, field_comments, reference
from pyro_lvm.registry import SECTIONS

PAGE = Path(__file__).parents[1] / "docs" / "config.md"


def _blocks(text: str) -> dict[str, str]:
    """{heading: the text under it, up to the next heading}."""
    blocks, heading = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
            blocks[heading] = ""
        elif heading is not None:
            blocks[heading] += line + "\n"
    return blocks


def test_the_committed_page_is_the_generated_one():
    assert PAGE.read_text() == reference(), "regenerate: python -m pyro_lvm.config.reference > docs/config.md"


def test_every_key_is_under_its_heading():
    blocks = _blocks(PAGE.read_text())
    for section, schema in FIXED.items():
        for key, field in schema.model_fields.items():
            assert f"| `{key}` |" in blocks[f"[{section}]"], (section, key)
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                for sub in field.annotation.model_fields:
                    assert f"| `{sub}` |" in blocks[f"[{section}.{key}]"], (section, key, sub)
    for section, registry in SECTIONS.items():
        for name in registry.names():
            block = blocks[f'{section}.name = "{name}"']
            for key in registry.schema(name).model_fields:
                assert key == "name" or f"| `{key}` |" in block, (section, name, key)


def test_comments_come_from_the_schema_source():
    comments = field_comments(FIXED["train"])
    assert comments["kl_warmup_steps"] == "beta rises linearly from 0 to 1 over these steps"
    assert comments["micro_batches"].startswith("each step's batch in this many chunks")  # a comment block above
