#!/usr/bin/env bash
# Build the hypernas Jupyter Book into _build/html.
#
#   bash scripts/build_book.sh            (what `make book` runs)
#
# Steps: (a) install MathJax 3 locally (npm, into the gitignored build/ folder) so the
# site renders formulas offline; (b) check that the experiment notebooks written by
# `hypernas reproduce` (papermill) exist under book/generated/; (c) run Jupyter Book
# with warnings as errors. A literate chapter is executed when its code or anything it
# reads changed (execute_notebooks: cache, emptied by step (b3)); book/generated/* is
# rendered with its stored outputs.
#
# Environment: VENV (default .venv) holds jupyter-book; if VENV/bin/jupyter-book does
# not exist, jupyter-book from PATH is used (e.g. on CI).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

VENV="${VENV:-.venv}"
if [[ -x "$VENV/bin/jupyter-book" ]]; then
    VENV="$(cd "$VENV" && pwd)"
    JB="$VENV/bin/jupyter-book"
    export PATH="$VENV/bin:$PATH"   # so the notebook kernel is the venv's python
elif command -v jupyter-book >/dev/null 2>&1; then
    JB="$(command -v jupyter-book)"
else
    echo "error: jupyter-book not found (looked in $VENV/bin and on PATH)" >&2
    exit 1
fi

# (a) MathJax 3, served from _static/mathjax (see sphinx.config in _config.yml).
NPM_PREFIX="build/npm"
MATHJAX_SRC="$NPM_PREFIX/node_modules/mathjax/es5"
MATHJAX_DST="build/static/mathjax"
if [[ ! -f "$MATHJAX_SRC/tex-chtml.js" ]]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: npm is needed once to install mathjax@3 into $NPM_PREFIX" >&2
        exit 1
    fi
    echo "==> installing mathjax@3 into $NPM_PREFIX"
    mkdir -p "$NPM_PREFIX"
    npm install --prefix "$NPM_PREFIX" mathjax@3 --no-audit --no-fund
fi
if [[ ! -f "$MATHJAX_DST/tex-chtml.js" ]] || [[ "$MATHJAX_SRC/tex-chtml.js" -nt "$MATHJAX_DST/tex-chtml.js" ]]; then
    echo "==> copying the MathJax es5 bundle to $MATHJAX_DST"
    rm -rf "$MATHJAX_DST"
    mkdir -p "$(dirname "$MATHJAX_DST")"
    cp -r "$MATHJAX_SRC" "$MATHJAX_DST"
fi

# (a2) plotly.js for the family explorer, from the installed plotly package (whose
# version matches the figure's JSON), served from _static/plotly (never a CDN).
PLOTLY_SRC="$(python -c 'import plotly, pathlib; print(pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js")')"
PLOTLY_DST="build/static/plotly/plotly.min.js"
if [[ ! -f "$PLOTLY_SRC" ]]; then
    echo "error: plotly.min.js not found in the plotly package ($PLOTLY_SRC)" >&2
    exit 1
fi
if ! cmp -s "$PLOTLY_SRC" "$PLOTLY_DST"; then
    echo "==> copying plotly.min.js to $PLOTLY_DST"
    mkdir -p "$(dirname "$PLOTLY_DST")"
    cp "$PLOTLY_SRC" "$PLOTLY_DST"
fi

# (b) the executed experiment notebooks must already exist.
missing=()
for exp in exp1 exp2 exp3; do
    [[ -f "book/generated/$exp.ipynb" ]] || missing+=("book/generated/$exp.ipynb")
done
if (( ${#missing[@]} )); then
    echo "error: missing executed experiment notebook(s): ${missing[*]}" >&2
    echo "       run \`hypernas reproduce\` first (e.g. \`hypernas reproduce --profile smoke\`)," >&2
    echo "       which executes the experiment notebooks with papermill into book/generated/." >&2
    exit 1
fi

# (b2) fold papermill's injected-parameters cell (it repeats the parameters cell): tag it
# hide-input. Only cell metadata changes; no output is touched.
python - <<'PY'
import pathlib, nbformat
for path in sorted(pathlib.Path("book/generated").glob("exp*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
            changed = True
    if changed:
        nbformat.write(nb, path)
PY

# (b3) the execution cache (execute_notebooks: cache) keys on a chapter's code only, so
# empty it whenever anything else a chapter reads has changed: the library, the committed
# results, the quick-profile runs, the bibliography, the executed experiment notebooks.
CACHE="_build/.jupyter_cache"
inputs() {
    git ls-files -co --exclude-standard -- hypernas results book/references.bib | grep -v '^results/smoke/'
    for d in results/quick book/generated; do
        if [[ -d "$d" ]]; then find "$d" -type f; fi
    done
}
fingerprint="$(inputs | sort -u | while read -r f; do
                   if [[ -f "$f" ]]; then sha256sum "$f"; fi
               done | sha256sum | cut -c1-64)"
if [[ -d "$CACHE" ]] && [[ "$(cat "$CACHE.inputs" 2>/dev/null)" != "$fingerprint" ]]; then
    echo "==> inputs of the chapters changed: emptying the execution cache $CACHE"
    rm -rf "$CACHE"
fi
mkdir -p _build
echo "$fingerprint" > "$CACHE.inputs"

# (c) build; -W turns every Sphinx warning (and, with raise_on_error, every cell
# error) into a non-zero exit; --keep-going reports all of them first; --all re-reads
# every page (cached outputs are reused), so that warnings of unchanged pages are not
# hidden by Sphinx's incremental build.
echo "==> jupyter-book build"
start=$(date +%s)
"$JB" build . --path-output . --config _config.yml --toc book/_toc.yml \
    --builder html --all -W --keep-going
echo "==> built _build/html in $(( $(date +%s) - start )) s"
