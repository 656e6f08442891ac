"""The `utils.py` pieces GPT-SoVITS s2 inherited from VITS, as the twins of both use them:
the tab-separated train.log logger and the resume selection (glob, then the int of
every digit in the full path; an empty list raises IndexError)."""

from __future__ import annotations

import glob
import logging
import os


def get_logger(model_dir: str, level: int) -> logging.Logger:
    logger = logging.getLogger(os.path.basename(model_dir))
    logger.setLevel(level)
    handler = logging.FileHandler(os.path.join(model_dir, "train.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s\t%(name)s\t%(levelname)s\t%(message)s"))
    logger.addHandler(handler)
    return logger


def latest_checkpoint_path(dir_path: str, regex: str) -> str:
    f_list = glob.glob(os.path.join(dir_path, regex))
    f_list.sort(key=lambda f: int("".join(filter(str.isdigit, f))))
    x = f_list[-1]
    print(x, flush=True)
    return x
