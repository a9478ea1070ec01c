"""Ship the top-level recipes/ and cards/ folders inside the wheel, as mipkit/_data/ (see mipkit.core.paths)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_FOLDERS = ("recipes", "cards")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout's folders
            return
        for folder in DATA_FOLDERS:
            self.copy_tree(folder, str(Path(self.build_lib) / "mipkit" / "_data" / folder))


setup(cmdclass={"build_py": BuildPyWithData})
