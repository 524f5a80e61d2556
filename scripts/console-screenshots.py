#!/usr/bin/env python3
"""Take the PNG screenshots of the dev server's web console in docs/screenshots/.

They come from the real browser test (tests/console/test_console_browser.py): a dev server,
a real worker process with a private Docker engine and git server, and headless Chromium
that logs in, watches the charts, deploys an app and follows its logs. The test saves a
full-page PNG of each main page when CONSOLE_SCREENSHOTS names a directory.

Needs what the integration suite needs (root on Debian, scripts/install-test-deps.sh, the
test extras of setup.cfg). Usage: scripts/console-screenshots.py [OUTPUT_DIR]
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    out = os.path.abspath(argv[0] if argv else os.path.join(ROOT, "docs", "screenshots"))
    python = os.path.join(ROOT, ".venv", "bin", "python")
    if not os.path.exists(python):
        python = sys.executable
    env = dict(os.environ, CONSOLE_SCREENSHOTS=out, CI="true")
    test = os.path.join("tests", "console", "test_console_browser.py")
    code = subprocess.call([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", test],
                           cwd=ROOT, env=env)
    if code == 0:
        print("screenshots in %s:" % out)
        for name in sorted(os.listdir(out)):
            print("  " + name)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
