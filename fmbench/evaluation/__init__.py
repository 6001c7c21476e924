"""Accuracy by a panel of LLM judges (PoLL, Verga et al. 2024): every judged answer gets one verdict per
judge, written as judgment rows (``fmbench.judgments``); the majority of a prompt's votes decides it.

- ``templates``: the judge prompts, one per model family.
- ``parsing``: a judge's answer into a verdict (JSON, fenced JSON, a ``Verdict:`` line, else unparsed).
- ``lexical``: token F1, ROUGE-L and cosine similarity of an answer against its reference.
- ``selection``: which answers are judged (one per distinct prompt and candidate, capped per bin).
- ``judges``: calling a judge through the endpoint clients (bounded concurrency, retries, cost).
- ``writer``: the judgment rows as Parquet parts.
- ``run``: judging a run's answers end to end (``evaluate_run``): ``fmbench run`` and ``fmbench evaluate``.
"""
