"""Environment values reach a compose service byte for byte (issue 17 item 5): compose
interpolates the agent's override file too, so the agent writes every ``$`` as ``$$``. The
repository's ``.env`` defines the variables the values mention, so any interpolation would show."""
from tests.integration.security.secsupport import BASE, deploy, project_containers, push

VALUES = {
    "DOLLAR": "abc$def",
    "BRACED": "x${X}y",
    "DOUBLE": "$$",
    "MIXED": "a$b ${X} $$ ${X:-fallback} $ end$",
    "QUOTES": "'\"\\ é",
}


def test_env_values_with_dollars_arrive_verbatim(sec_agent, git_server, docker_client, engine):
    uid = "sec-env-escape"
    engine(uid)
    push(git_server, uid, {"docker-compose.yml": BASE, ".env": "X=from-dot-env\ndef=oops\nb=oops\n"})
    reply = deploy(sec_agent, git_server, uid, env_vars=VALUES)
    assert reply["success"], reply
    [container] = project_containers(docker_client, uid)
    for name, value in VALUES.items():
        result = container.exec_run(["sh", "-c", f'printf %s "${name}"'])
        assert result.exit_code == 0
        assert result.output == value.encode(), (name, result.output)
    assert sec_agent.call("service.delete", {"service_uid": uid})["success"]
    assert project_containers(docker_client, uid) == []

