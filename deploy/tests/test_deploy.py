#!/usr/bin/env python3
"""Static checks of the deployment files (no cluster, no container engine).

The Helm chart is rendered by Helm's own engine (render.py) and the
objects it yields are asserted: a StatefulSet on the headless Service,
readiness on /ready, a PodDisruptionBudget, the preStop hook, resources,
the TLS secret mounted as files, a non-root security context, volume claim
templates. The plain manifests in deploy/kubernetes must be the chart's
render. The pod scripts (start.sh, prestop.sh) run here with stand-ins for
curl, getent and cassio on PATH, so their decisions (which certificate,
which seeds, decommission on scale-down only) are checked. The Dockerfile's
runtime stage is checked for a non-root user, a volume and a health check.

Run from .ci/run (deploy/ci.sh) with the pinned tools:
    python3 -m unittest discover -s deploy/tests -v
"""

import os
import pathlib
import re
import stat
import subprocess
import tempfile
import tomllib
import unittest

import yaml

import render

ROOT = render.ROOT
CHART = render.CHART
FILES = CHART / "files"


def objects(values=None):
    """Every object the chart renders, as (kind, name) -> dict."""
    out = {}
    for text in render.render(values).values():
        for doc in yaml.safe_load_all(text):
            if doc:
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def one(objs, kind):
    found = [o for (k, _), o in objs.items() if k == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def setting_names():
    """The node's setting names, from cassio-node/src/config.rs (FIELDS)."""
    text = (ROOT / "cassio-node" / "src" / "config.rs").read_text()
    block = text.split("pub const FIELDS: &[&str] = &[", 1)[1].split("];", 1)[0]
    return set(re.findall(r'"([a-z_]+)"', block))


class Chart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objs = objects()
        cls.sts = one(cls.objs, "StatefulSet")
        cls.pod = cls.sts["spec"]["template"]["spec"]
        (cls.container,) = cls.pod["containers"]

    def test_statefulset_on_the_headless_service(self):
        spec = self.sts["spec"]
        headless = self.objs[("Service", spec["serviceName"])]
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        # Peers must find each other before any is ready.
        self.assertTrue(headless["spec"]["publishNotReadyAddresses"])
        self.assertEqual(headless["spec"]["selector"], spec["selector"]["matchLabels"])
        self.assertEqual(spec["replicas"], 3)
        self.assertEqual(spec["podManagementPolicy"], "Parallel")
        self.assertEqual(spec["updateStrategy"]["type"], "RollingUpdate")
        labels = spec["template"]["metadata"]["labels"]
        for k, v in spec["selector"]["matchLabels"].items():
            self.assertEqual(labels[k], v)
        env = {e["name"]: e.get("value") for e in self.container["env"]}
        self.assertEqual(
            env["CASSIO_SEED_HOST"],
            f"cassio-0.{spec['serviceName']}.cassio.svc.cluster.local",
        )

    def test_client_service_is_not_headless(self):
        clients = [
            o
            for (k, _), o in self.objs.items()
            if k == "Service" and o["spec"].get("clusterIP") != "None"
        ]
        self.assertEqual(len(clients), 1)
        ports = {p["name"] for p in clients[0]["spec"]["ports"]}
        self.assertEqual(ports, {"client", "resp"})

    def test_probes(self):
        c = self.container
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/ready")
        self.assertEqual(c["readinessProbe"]["httpGet"]["port"], "http")
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/health")
        self.assertEqual(c["startupProbe"]["httpGet"]["path"], "/health")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports, {"peer": 7000, "client": 7379, "resp": 6380, "http": 8080})

    def test_pod_disruption_budget(self):
        pdb = one(self.objs, "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        self.assertEqual(
            pdb["spec"]["selector"]["matchLabels"], self.sts["spec"]["selector"]["matchLabels"]
        )

    def test_prestop_hook_and_grace(self):
        cmd = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(cmd, ["/bin/sh", "/etc/cassio/scripts/prestop.sh"])
        # A scale-down decommission must fit in the grace period.
        self.assertGreaterEqual(self.pod["terminationGracePeriodSeconds"], 600)
        env = {e["name"]: e.get("value") for e in self.container["env"]}
        self.assertEqual(env["CASSIO_STATEFULSET"], self.sts["metadata"]["name"])
        # The hook may read that StatefulSet, and nothing else.
        role = one(self.objs, "Role")
        (rule,) = role["rules"]
        self.assertEqual(rule["verbs"], ["get"])
        self.assertEqual(rule["resources"], ["statefulsets"])
        self.assertEqual(rule["resourceNames"], [self.sts["metadata"]["name"]])
        binding = one(self.objs, "RoleBinding")
        self.assertEqual(binding["subjects"][0]["name"], self.pod["serviceAccountName"])

    def test_resources(self):
        r = self.container["resources"]
        for part in ("requests", "limits"):
            self.assertIn("cpu", r[part])
            self.assertIn("memory", r[part])

    def test_tls_secret_mounted_as_files(self):
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        mounts = {m["name"]: m for m in self.container["volumeMounts"]}
        self.assertEqual(volumes["tls"]["secret"]["secretName"], "cassio-tls")
        self.assertEqual(volumes["tls"]["secret"]["defaultMode"], 0o440)
        self.assertEqual(mounts["tls"]["mountPath"], "/etc/cassio/tls")
        self.assertTrue(mounts["tls"]["readOnly"])
        # No secret reaches the node through its environment.
        for e in self.container["env"]:
            self.assertNotIn("secretKeyRef", e.get("valueFrom", {}))

    def test_users_secret_mounted_as_files_by_default(self):
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        mounts = {m["name"]: m for m in self.container["volumeMounts"]}
        self.assertEqual(volumes["users"]["secret"]["secretName"], "cassio-users")
        self.assertEqual(volumes["users"]["secret"]["defaultMode"], 0o440)
        self.assertEqual(mounts["users"]["mountPath"], "/etc/cassio/users")
        self.assertTrue(mounts["users"]["readOnly"])
        env = {e["name"]: e.get("value") for e in self.container["env"]}
        self.assertEqual(env["CASSIO_USERS_DIR"], "/etc/cassio/users")
        config = tomllib.loads(one(self.objs, "ConfigMap")["data"]["cassio.toml"])
        self.assertNotIn("insecure_no_auth", config)

    def test_insecure_no_auth_drops_the_users_secret(self):
        objs = objects({"auth": {"insecureNoAuth": True}})
        config = tomllib.loads(one(objs, "ConfigMap")["data"]["cassio.toml"])
        self.assertIs(config["insecure_no_auth"], True)
        pod = one(objs, "StatefulSet")["spec"]["template"]["spec"]
        self.assertNotIn("users", [v["name"] for v in pod["volumes"]])
        (c,) = pod["containers"]
        self.assertNotIn("CASSIO_USERS_DIR", [e["name"] for e in c["env"]])

    def test_no_users_secret_and_no_insecure_no_auth_is_refused(self):
        with self.assertRaises(Exception) as e:
            objects({"auth": {"usersSecret": ""}})
        self.assertIn("auth.usersSecret", str(e.exception))

    def test_security_context_non_root(self):
        psc = self.pod["securityContext"]
        self.assertTrue(psc["runAsNonRoot"])
        self.assertGreater(psc["runAsUser"], 0)
        self.assertEqual(psc["seccompProfile"]["type"], "RuntimeDefault")
        csc = self.container["securityContext"]
        self.assertFalse(csc["allowPrivilegeEscalation"])
        self.assertTrue(csc["readOnlyRootFilesystem"])
        self.assertEqual(csc["capabilities"]["drop"], ["ALL"])
        self.assertFalse(self.pod["automountServiceAccountToken"])

    def test_volume_claim_templates_hold_the_data_dir(self):
        (claim,) = self.sts["spec"]["volumeClaimTemplates"]
        self.assertEqual(claim["spec"]["accessModes"], ["ReadWriteOnce"])
        self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "10Gi")
        mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        self.assertEqual(mounts[claim["metadata"]["name"]], "/var/lib/cassio")

    def test_config_uses_only_real_settings(self):
        cm = one(self.objs, "ConfigMap")
        config = tomllib.loads(cm["data"]["cassio.toml"])
        unknown = set(config) - setting_names()
        self.assertFalse(unknown, f"not settings of cassio start: {unknown}")
        self.assertEqual(config["data_dir"], "/var/lib/cassio")
        self.assertFalse(config["leave_on_exit"])
        self.assertEqual(config["replication_factor"], 3)
        env = [e["name"] for e in self.container["env"]]
        self.assertIn("CASSIO_CONFIG", env)

    def test_values_change_the_render(self):
        objs = objects({"replicas": 5, "image": {"digest": "sha256:" + "a" * 64}})
        sts = one(objs, "StatefulSet")
        self.assertEqual(sts["spec"]["replicas"], 5)
        (c,) = sts["spec"]["template"]["spec"]["containers"]
        self.assertEqual(c["image"], "cassio@sha256:" + "a" * 64)
        # With a digest the checkov skip goes away.
        self.assertNotIn("annotations", sts["metadata"])
        env = {e["name"]: e.get("value") for e in c["env"]}
        peers = env["CASSIO_PEER_HOSTS"].split()
        self.assertEqual([p.split(".")[0] for p in peers], [f"cassio-{i}" for i in range(1, 5)])

    def test_plain_manifests_are_the_charts_render(self):
        committed = (ROOT / "deploy" / "kubernetes" / "cassio.yaml").read_text()
        self.assertEqual(
            committed,
            render.plain(),
            "deploy/kubernetes/cassio.yaml is stale: "
            "python3 deploy/tests/render.py --plain > deploy/kubernetes/cassio.yaml",
        )


def stub(dirpath, name, body):
    p = pathlib.Path(dirpath) / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


class ScriptHarness:
    """Runs start.sh and prestop.sh with curl, getent and cassio stood in for."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name)
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        self.calls = self.dir / "calls"
        # cassio: records its arguments.
        stub(self.bin, "cassio", f'echo "cassio $*" >> {self.calls}\n')
        stub(self.bin, "sleep", f'echo "sleep $*" >> {self.calls}\n')

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, script, env):
        full = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "CASSIO_BIN": str(self.bin / "cassio"),
            **env,
        }
        r = subprocess.run(
            ["/bin/sh", str(FILES / script)],
            env=full,
            capture_output=True,
            text=True,
            timeout=30,
        )
        calls = self.calls.read_text().splitlines() if self.calls.exists() else []
        return r, calls

    def prestop(self, hostname, api_answer, curl_ok=True):
        sa = self.dir / "sa"
        sa.mkdir(exist_ok=True)
        for f, v in [("token", "t0ken"), ("namespace", "db"), ("ca.crt", "x")]:
            (sa / f).write_text(v)
        stub(
            self.bin,
            "curl",
            f'echo "curl $*" >> {self.calls}\n'
            + (f"cat <<'JSON'\n{api_answer}\nJSON\n" if curl_ok else "exit 7\n"),
        )
        return self.run_script(
            "prestop.sh",
            {
                "HOSTNAME": hostname,
                "CASSIO_SA_DIR": str(sa),
                "CASSIO_STATEFULSET": "cassio",
                "CASSIO_DRAIN_SECONDS": "3",
                "CASSIO_DECOMMISSION_TIMEOUT": "20m",
            },
        )

    # The API server's answer: spec before status, compact.
    STS = (
        '{"kind":"StatefulSet","metadata":{"name":"cassio","managedFields":'
        '[{"fieldsV1":{"f:spec":{"f:replicas":{}}}}]},'
        '"spec":{"replicas":%d,"serviceName":"cassio-headless"},'
        '"status":{"replicas":3,"readyReplicas":3}}'
    )

    def start(self, hostname, ids, data_has_node_id=False, ready_peers=(), seed_resolves=True):
        tls = self.dir / "tls"
        tls.mkdir(exist_ok=True)
        (tls / "ca.pem").write_text("ca")
        for i in ids:
            (tls / f"node{i}.pem").write_text("cert")
            (tls / f"node{i}.key").write_text("key")
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        if data_has_node_id:
            (data / "node-id").write_text("1")
        stub(self.bin, "getent", "exit 0\n" if seed_resolves else "exit 2\n")
        ready = " ".join(ready_peers)
        stub(
            self.bin,
            "curl",
            f'for a in "$@"; do last="$a"; done\n'
            f'echo "curl $last" >> {self.calls}\n'
            f'case " {ready} " in *" $(echo "$last" | cut -d/ -f3 | cut -d: -f1) "*) exit 0;; esac\n'
            "exit 22\n",
        )
        return self.run_script(
            "start.sh",
            {
                "HOSTNAME": hostname,
                "POD_IP": "10.1.2.3",
                "CASSIO_SEED_HOST": "cassio-0.h",
                "CASSIO_PEER_HOSTS": "cassio-1.h cassio-2.h",
                "CASSIO_TLS_DIR": str(tls),
                "CASSIO_DATA_DIR": str(data),
                "CASSIO_SEED_WAIT_TRIES": "2",
            },
        )



class PodScripts(ScriptHarness, unittest.TestCase):
    """The pod scripts' decisions."""

    def test_prestop_decommissions_on_scale_down(self):
        r, calls = self.prestop("cassio-2", self.STS % 2)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("curl", calls[0])
        self.assertIn("/apis/apps/v1/namespaces/db/statefulsets/cassio", calls[0])
        self.assertIn("Authorization: Bearer t0ken", calls[0])
        self.assertEqual(
            calls[1:], ["cassio decommission --node 127.0.0.1:8080 --timeout 20m"]
        )

    def test_prestop_only_drains_when_the_pod_stays(self):
        for host, replicas in [("cassio-1", 2), ("cassio-2", 3), ("cassio-0", 1)]:
            self.calls.unlink(missing_ok=True)
            r, calls = self.prestop(host, self.STS % replicas)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(calls[1:], ["sleep 3"], f"{host} with {replicas} replicas")

    def test_prestop_without_the_api_never_decommissions(self):
        r, calls = self.prestop("cassio-2", "", curl_ok=False)
        self.assertEqual(calls[1:], ["sleep 3"])
        self.assertIn("unknown", r.stderr)

    def test_start_runs_as_the_ordinals_node_with_its_certificate(self):
        r, calls = self.start("cassio-1", [1, 2, 3])
        self.assertEqual(r.returncode, 0, r.stderr)
        tls = self.dir / "tls"
        self.assertEqual(
            calls,
            [
                f"cassio start --advertise 10.1.2.3:7000 --seeds cassio-0.h:7000 "
                f"--tls-ca {tls}/ca.pem --tls-cert {tls}/node2.pem --tls-key {tls}/node2.key"
            ],
        )

    def test_start_refuses_a_missing_certificate(self):
        r, calls = self.start("cassio-3", [1, 2, 3])
        self.assertEqual(r.returncode, 2)
        self.assertIn("node4.pem is missing", r.stderr)
        self.assertIn("--node-ids 4", r.stderr)
        self.assertEqual(calls, [])

    def test_start_waits_for_the_seed_then_gives_up(self):
        r, calls = self.start("cassio-1", [1, 2], seed_resolves=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("does not resolve", r.stderr)
        # Two lookups, one pause between them.
        self.assertEqual(calls, ["sleep 2"])

    def test_pod_zero_bootstraps_or_rejoins(self):
        # First start, nobody else ready: bootstrap through itself.
        r, calls = self.start("cassio-0", [1, 2, 3])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--seeds cassio-0.h:7000", calls[-1])
        # An empty volume while pod 2 is ready: join through it.
        self.calls.unlink()
        r, calls = self.start("cassio-0", [1, 2, 3], ready_peers=["cassio-2.h"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--seeds cassio-2.h:7000", calls[-1])
        self.assertIn("--tls-cert", calls[-1])
        self.assertTrue(calls[-1].endswith("node1.key"))
        # A restart on its own data: through its own name, peers not asked.
        self.calls.unlink()
        r, calls = self.start(
            "cassio-0", [1, 2, 3], data_has_node_id=True, ready_peers=["cassio-2.h"]
        )
        self.assertEqual(len(calls), 1, calls)
        self.assertIn("--seeds cassio-0.h:7000", calls[0])


class PodScriptsWithUsers(ScriptHarness, unittest.TestCase):
    """The users secret's files reach the node and the hook's CLI."""

    def setUp(self):
        super().setUp()
        # cassio: records the users file and admin user it was given.
        stub(
            self.bin,
            "cassio",
            f'echo "cassio $1 users=${{CASSIO_USERS_FILE:-}} user=${{CASSIO_USER:-}} '
            f'password=${{CASSIO_PASSWORD:-}}" >> {self.calls}\n',
        )
        self.users = self.dir / "users"
        self.users.mkdir()

    def run_script(self, script, env):
        return super().run_script(script, {**env, "CASSIO_USERS_DIR": str(self.users)})

    def test_start_passes_users_toml(self):
        (self.users / "users.toml").write_text("[[users]]\n")
        r, calls = self.start("cassio-1", [1, 2, 3])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(calls, [f"cassio start users={self.users}/users.toml user= password="])

    def test_start_refuses_a_secret_without_users_toml(self):
        r, calls = self.start("cassio-1", [1, 2, 3])
        self.assertEqual(r.returncode, 2)
        self.assertIn("users.toml is missing", r.stderr)
        self.assertEqual(calls, [])

    def test_prestop_decommissions_as_the_admin_user(self):
        (self.users / "admin-user").write_text("ops\n")
        (self.users / "admin-password").write_text("s3cret\n")
        r, calls = self.prestop("cassio-2", self.STS % 2)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(calls[1:], ["cassio decommission users= user=ops password=s3cret"])



class Dockerfile(unittest.TestCase):
    def setUp(self):
        self.text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
        stages = re.split(r"^FROM ", self.text, flags=re.M)[1:]
        self.assertEqual(len(stages), 2, "a builder and a runtime stage")
        self.builder, self.runtime = stages

    def test_builder_runs_the_shared_build_steps(self):
        self.assertIn("AS builder", self.builder)
        self.assertIn("RUN deploy/docker/build-steps.sh build /out", self.builder)

    def test_runtime_is_non_root_with_a_volume_and_health_check(self):
        user = re.search(r"^USER (\S+)", self.runtime, re.M).group(1)
        self.assertNotIn(user.split(":")[0], ("0", "root"))
        self.assertIn('VOLUME ["/var/lib/cassio"]', self.runtime)
        self.assertIn("COPY deploy/docker/cassio.toml /etc/cassio/cassio.toml", self.runtime)
        self.assertIn("ENV CASSIO_CONFIG=/etc/cassio/cassio.toml", self.runtime)
        hc = re.search(r"^HEALTHCHECK .*\n.*", self.runtime, re.M).group(0)
        self.assertIn("/health", hc)
        self.assertIn("COPY --from=builder /out/cassio /usr/local/bin/cassio", self.runtime)
        # The default settings are real ones, with the data in the volume
        # and the health check's port.
        config = tomllib.loads((ROOT / "deploy" / "docker" / "cassio.toml").read_text())
        self.assertFalse(set(config) - setting_names(), set(config) - setting_names())
        self.assertEqual(config["data_dir"], "/var/lib/cassio")
        self.assertTrue(config["http_addr"].endswith(":8080"))
        self.assertIn("127.0.0.1:8080/health", hc)
        names = {n.lower() for n in re.findall(r"CASSIO_([A-Z_]+)=", self.runtime)}
        self.assertEqual(names, {"config"})


if __name__ == "__main__":
    unittest.main()
