"""The process exit-code contract.

The supervisor's restart logic and the systemd units
(``RestartPreventExitStatus=``) read these numbers; change them only with both.
Codes follow sysexits(3) where one fits.
"""

OK = 0
FAILURE = 1            # unexpected error; restart is fine
USAGE = 2              # bad command line (argparse)
NOT_BUILT = 3          # a role this build does not provide
NO_PERMISSION = 77     # EX_NOPERM: supervisor not root, or worker started as root
CONFIG = 78            # EX_CONFIG: a bad setting, a missing --config file
NO_IDENTITY = 79       # no valid certificate and no JOIN_TOKEN: needs an operator
GAVE_UP = 80           # reconnecting gave up (RECONNECT_ENABLED=false / max attempts)
ENROLL_FAILED = 81     # enrollment refused (bad token, trust failure)
AUTH_PERMANENT = 82    # the control plane refused this identity for good
BOOT_FAILURE = 83      # run: the worker kept failing at boot; restarts stopped

# Exit codes after which restarting cannot help: neither the supervisor in
# `run` mode nor systemd restarts the worker on these.
NO_RESTART = frozenset({NO_PERMISSION, CONFIG, NO_IDENTITY, GAVE_UP, ENROLL_FAILED, AUTH_PERMANENT})

DESCRIPTIONS = {
    OK: "normal exit",
    FAILURE: "unexpected error",
    USAGE: "bad command line",
    NOT_BUILT: "role not available in this build",
    NO_PERMISSION: "wrong user: the supervisor must be root, the worker must not be",
    CONFIG: "invalid configuration",
    NO_IDENTITY: "no valid certificate and no JOIN_TOKEN to enroll with",
    GAVE_UP: "reconnection attempts exhausted",
    ENROLL_FAILED: "enrollment refused",
    AUTH_PERMANENT: "authentication permanently refused",
    BOOT_FAILURE: "worker failed repeatedly at boot",
}
