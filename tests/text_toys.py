"""A tiny BEIR-layout retrieval set for text tests: two documents a topic, one query a topic."""

import json

TOPICS = ["cats", "rain", "football", "bread", "planets", "guitars", "rivers", "chess", "tea",
          "volcanoes", "bees", "trains"]  # fmt: skip


def write_beir(root, topics, qrels):
    """``root/corpus.jsonl`` (documents ``d{i}0`` history, ``d{i}1`` science of topic i),
    ``root/queries.jsonl`` (``q{i}``: "tell me about <topic>") and ``root/qrels/<split>.tsv``
    for each ``split -> rows`` of ``qrels`` (rows: ``"q\\td\\tscore\\n"`` lines)."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i, t in enumerate(topics):
            for j, angle in enumerate(("history", "science")):
                text = f"On the {angle} of {t}."
                doc = {"_id": f"d{i}{j}", "title": f"{t} {angle}", "text": text}
                f.write(json.dumps(doc) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for i, t in enumerate(topics):
            f.write(json.dumps({"_id": f"q{i}", "text": f"tell me about {t}"}) + "\n")
    for split, rows in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return root
