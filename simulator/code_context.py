"""The code around the cursor that simulated developers send with a completion request.

Small per-language file skeletons with random names, cut at a random trigger point, so the
gateway sees varied prefixes and suffixes of the right language (and real token counts).
"""

from __future__ import annotations

import numpy as np

CURSOR = "§"
NOUNS = ("user", "order", "item", "event", "record", "config", "session", "payload", "node")
VERBS = ("load", "parse", "build", "update", "render", "validate", "merge", "fetch", "count")

# {verb}, {noun}: names; "§" marks where the cursor may be (one is chosen).
TEMPLATES = {
    "python": (
        "import json\n\n\ndef {verb}_{noun}(path):\n    with open(path) as f:\n        §data = "
        "json.load(f)\n    §return data\n\n\ndef main():\n    §print({verb}_{noun}('a.json'))\n"
    ),
    "typescript": (
        "export function {verb}{Noun}(items: {Noun}[]): number {{\n  let total = 0;\n  §for "
        "(const item of items) {{\n    §total += item.size;\n  }}\n  §return total;\n}}\n"
    ),
    "java": (
        "public class {Noun}Service {{\n    public int {verb}(List<{Noun}> items) {{\n        "
        "§int total = 0;\n        §for ({Noun} item : items) {{\n            total += "
        "item.size();\n        }}\n        §return total;\n    }}\n}}\n"
    ),
    "go": (
        "package main\n\nfunc {verb}{Noun}(items []{Noun}) int {{\n\t§total := 0\n\t§for _, "
        "item := range items {{\n\t\ttotal += item.Size\n\t}}\n\t§return total\n}}\n"
    ),
    "rust": (
        "fn {verb}_{noun}(items: &[{Noun}]) -> usize {{\n    §let mut total = 0;\n    §for "
        "item in items {{\n        total += item.size;\n    }}\n    §total\n}}\n"
    ),
    "cpp": (
        "#include <vector>\n\nint {verb}_{noun}(const std::vector<{Noun}>& items) {{\n    "
        "§int total = 0;\n    §for (const auto& item : items) {{\n        total += "
        "item.size;\n    }}\n    §return total;\n}}\n"
    ),
    "kotlin": (
        "fun {verb}{Noun}(items: List<{Noun}>): Int {{\n    §var total = 0\n    §for (item in "
        "items) {{\n        total += item.size\n    }}\n    §return total\n}}\n"
    ),
    "ruby": (
        "def {verb}_{noun}(items)\n  §total = 0\n  §items.each do |item|\n    total += "
        "item.size\n  end\n  §total\nend\n"
    ),
}
EXTENSIONS = {
    "python": "py",
    "typescript": "ts",
    "java": "java",
    "go": "go",
    "rust": "rs",
    "cpp": "cpp",
    "kotlin": "kt",
    "ruby": "rb",
}


def context_for(rng: np.random.Generator, language: str) -> tuple[str, str, str]:
    """(prefix, suffix, file path) of a random cursor position in a file of ``language``."""
    noun = NOUNS[int(rng.integers(len(NOUNS)))]
    verb = VERBS[int(rng.integers(len(VERBS)))]
    template = TEMPLATES.get(language, TEMPLATES["python"])
    text = template.format(verb=verb, noun=noun, Noun=noun.capitalize())
    marks = [i for i, c in enumerate(text) if c == CURSOR]
    cut = marks[int(rng.integers(len(marks)))]
    clean = text.replace(CURSOR, "")
    # Markers before the cut were removed one character each.
    position = cut - sum(1 for m in marks if m < cut)
    extension = EXTENSIONS.get(language, "txt")
    return clean[:position], clean[position:], f"src/{verb}_{noun}.{extension}"
