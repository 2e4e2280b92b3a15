import pathlib
import sys

# The tests import the harness beside them, wherever pytest is started from.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
