# Jupyter server settings for tweaking the book in JupyterLab (`make lab`, tests/test_lab.py).
#
# Jupyter reads this file when this folder is on JUPYTER_CONFIG_PATH, which `make lab` sets:
#
#   JUPYTER_CONFIG_PATH=$PWD/jupyter .venv/bin/jupyter lab --notebook-dir=book
#
# What opens the chapters as notebooks is jupytext's contents manager, which the `jupytext`
# package switches on by itself (its jupyter_server_config.d/jupytext.json): it serves every
# book/*.md as a notebook and saves it back to the same .md, in the MyST format it was
# written in, without outputs. Its settings for the book (no pairing, the header kept as it
# is) live in book/jupytext.toml, which it reads whatever config the server was started with.
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# local only; a token is required (Jupyter makes a random one unless one is given;
# `make lab` passes its own so that it can print the URL)
c.ServerApp.ip = "127.0.0.1"  # noqa: F821 (`c` is defined by traitlets)
c.ServerApp.open_browser = False  # noqa: F821

# lab-settings/overrides.json: open .md files as notebooks (jupytext) rather than as text
c.LabApp.app_settings_dir = os.path.join(HERE, "lab-settings")  # noqa: F821

# nothing fetched from the internet: no news feed, no update check
c.LabApp.news_url = None  # noqa: F821
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"  # noqa: F821
