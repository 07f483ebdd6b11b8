//! A packed first-party plugin runs under runc as a non-root user on a read-only root
//! filesystem, with only its key mounted in, and answers its (signed) health endpoint.

use crate::common::*;
use berth::content::layout::OciLayout;
use berth::content::{TagResolver, fetch_all};
use berth::pack::{PackSpec, pack};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops and removes the container however the test ends.
struct Container(String);
impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc").args(["kill", &self.0, "KILL"]).output();
        let _ = Command::new("runc").args(["delete", "--force", &self.0]).output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Unpacks the image's single layer into `rootfs` (as root, keeping owners and modes).
async fn unpack(layout: &OciLayout, tag: &str, rootfs: &Path) -> Value {
    let image = layout.resolve(tag).await.unwrap();
    let manifest: Value = serde_json::from_slice(&fetch_all(layout, &image).await.unwrap()).unwrap();
    let config_desc: oci_spec::image::Descriptor = serde_json::from_value(manifest["config"].clone()).unwrap();
    let config: Value = serde_json::from_slice(&fetch_all(layout, &config_desc).await.unwrap()).unwrap();
    let layer: oci_spec::image::Descriptor = serde_json::from_value(manifest["layers"][0].clone()).unwrap();
    let tgz = fetch_all(layout, &layer).await.unwrap();
    std::fs::create_dir_all(rootfs).unwrap();
    let archive = rootfs.parent().unwrap().join("layer.tar.gz");
    std::fs::write(&archive, tgz).unwrap();
    sh(Command::new("tar").args(["-xzpf"]).arg(&archive).arg("--numeric-owner").arg("-C").arg(rootfs));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_plugin_runs_non_root_on_a_read_only_root_and_answers_health() {
    require_tool("runc");
    require_tool("tar");
    let work = tempfile::tempdir().unwrap();
    let layout = OciLayout::open(work.path().join("layout")).unwrap();
    let spec = PackSpec::new(plugin_binary("json-transform"));
    pack(&spec, &layout, Some("v1")).await.unwrap();

    let bundle = work.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    let config = unpack(&layout, "v1", &rootfs).await;
    assert_eq!(config["config"]["User"], "65532:65532");

    let secrets = work.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let key: [u8; 32] = rand::random();
    std::fs::write(secrets.join("runner_api_key"), key).unwrap();

    // runc's default spec, then the sandbox this test needs: the image's user and
    // entrypoint, read-only root, no capabilities, no new privileges, the key mounted
    // read-only, and the host network so the test can reach the port.
    sh(Command::new("runc").args(["spec", "--bundle"]).arg(&bundle));
    let path = bundle.join("config.json");
    let mut rt: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let port = free_port();
    rt["process"]["terminal"] = json!(false);
    rt["process"]["user"] = json!({"uid": 65532, "gid": 65532});
    rt["process"]["args"] = config["config"]["Entrypoint"].clone();
    rt["process"]["env"] =
        json!(["PATH=/usr/bin:/bin", format!("PLUGIN_PORT={port}"), "RUNNER_API_KEY_FILE=/run/secrets/runner_api_key"]);
    rt["process"]["noNewPrivileges"] = json!(true);
    rt["process"]["capabilities"] = json!({"bounding": [], "effective": [], "permitted": [], "ambient": []});
    rt["root"]["readonly"] = json!(true);
    rt["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/run/secrets", "type": "bind", "source": secrets, "options": ["rbind", "ro"]
    }));
    let ns = rt["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "network");
    std::fs::write(&path, serde_json::to_vec_pretty(&rt).unwrap()).unwrap();

    let id = format!("berth-test-{}", std::process::id());
    let guard = Container(id.clone());
    let log = std::fs::File::create(work.path().join("plugin.log")).unwrap();
    let mut child = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();

    // Wait for it to listen (bounded: 200 tries), then ask for health, signed.
    let signer = berth_httpsig::Signer::new(key.to_vec(), "runner");
    let authority = format!("127.0.0.1:{port}");
    let c = client();
    let mut status = None;
    for _ in 0..200 {
        let signed = signer.sign("GET", &authority, "/v1/health", &[], b"").unwrap();
        let mut rb = c.get(format!("http://{authority}/v1/health"));
        for (k, v) in signed.headers() {
            rb = rb.header(k, v);
        }
        match rb.send().await {
            Ok(r) => {
                status = Some((r.status().as_u16(), r.text().await.unwrap_or_default()));
                break;
            }
            Err(_) => {
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!("runc exited {exit}: {}", std::fs::read_to_string(work.path().join("plugin.log")).unwrap());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let (code, body) = status.expect("the plugin never listened");
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "ok");
    // unsigned requests are refused inside the sandbox too
    let r = c.get(format!("http://{authority}/v1/health")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // who and where it runs, seen from the host
    let state: Value = serde_json::from_str(&sh(Command::new("runc").args(["state", &id]))).unwrap();
    let pid = state["pid"].as_u64().unwrap();
    let status_file = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status_file.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == "65532"), "{uid_line}");
    let cap_eff = status_file.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(cap_eff.ends_with("0000000000000000"), "{cap_eff}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).unwrap();
    assert!(
        root.split_whitespace().nth(5).unwrap().split(',').any(|o| o == "ro"),
        "root mount is not read-only: {root}"
    );

    drop(guard);
    let _ = child.wait();
}

/// The conformance launcher's sandbox, seen from the host: the manifest's limits are in the
/// container's cgroups, /tmp is a small tmpfs, the root is read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launched_plugins_run_under_their_resource_limits() {
    require_tool("runc");
    let work = tempfile::tempdir().unwrap();
    let layout = OciLayout::open(work.path().join("layout")).unwrap();
    pack(&PackSpec::new(plugin_binary("json-transform")), &layout, Some("v1")).await.unwrap();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/plugins/json-transform/plugin.json"),
    )
    .unwrap();
    let manifest = berth::plugin::validate(&serde_json::from_str(&text).unwrap(), None).unwrap();
    let want = berth::runner::spec::limits_for(&manifest);
    assert_eq!(want.memory_mib, 64, "json-transform asks for 64 MiB");
    let reference = format!("oci-layout:{}:v1", work.path().join("layout").display());
    let launched = berth::conformance::launch::launch(&reference, &Default::default(), Some(manifest)).await.unwrap();

    let state: Value = serde_json::from_str(&sh(Command::new("runc").args(["state", launched.id()]))).unwrap();
    let pid = state["pid"].as_u64().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let read_limit = |controller: &str, file: &str| -> Option<String> {
        // cgroup v1 lines look like "7:memory:/path"; v2 has a single "0::/path".
        let line =
            cgroups.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == controller)))?;
        let path = line.splitn(3, ':').nth(2)?;
        std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{file}")).ok()
    };
    let v2 = |file: &str| -> Option<String> {
        let path = cgroups.lines().find(|l| l.starts_with("0::"))?.trim_start_matches("0::");
        std::fs::read_to_string(format!("/sys/fs/cgroup{path}/{file}")).ok()
    };
    let memory =
        read_limit("memory", "memory.limit_in_bytes").or_else(|| v2("memory.max")).expect("memory limit readable");
    assert_eq!(memory.trim(), (64u64 << 20).to_string());
    let pids = read_limit("pids", "pids.max").or_else(|| v2("pids.max")).expect("pids limit readable");
    assert_eq!(pids.trim(), want.pids.to_string());

    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let tmp = mountinfo.lines().find(|l| l.split_whitespace().nth(4) == Some("/tmp")).expect("/tmp mounted");
    assert!(tmp.contains(" - tmpfs "), "{tmp}");
    let root = mountinfo.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).unwrap();
    assert!(root.split_whitespace().nth(5).unwrap().split(',').any(|o| o == "ro"), "{root}");
    drop(launched);
    // Dropping it stopped and removed the container.
    let gone = Command::new("runc").args(["state", state["id"].as_str().unwrap()]).output().unwrap();
    assert!(!gone.status.success());
}
