//! `bootstrap ping`: connect to every host and say what is there.

use anyhow::Result;
use futures::future::join_all;

use crate::cli::GlobalArgs;
use crate::error::exit;
use crate::inventory::Inventory;
use crate::transport::Session;

const PROBE: &str = r#". /etc/os-release 2>/dev/null; echo "os=${PRETTY_NAME:-unknown}"; echo "user=$(id -un)"
if [ "$(id -u)" = 0 ]; then echo "sudo=root"; elif sudo -n true 2>/dev/null; then echo "sudo=yes"; else echo "sudo=no"; fi"#;

pub fn ping(g: &GlobalArgs) -> Result<i32> {
    let inventory = Inventory::load(&g.inventory)?;
    let hosts: Vec<_> = inventory
        .hosts
        .iter()
        .filter(|h| g.limit.as_ref().is_none_or(|l| l.contains(&h.name)))
        .collect();
    inventory.check_key_files(hosts.iter().copied(), false)?;
    let opts = crate::runner::default_connect_options(&inventory, g.strict_host_keys);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(join_all(hosts.iter().map(|h| {
        let opts = opts.clone();
        async move {
            let session = Session::connect(&h.ssh, &opts).await?;
            let out = session.exec_unprivileged(PROBE, None).await?;
            let note = session
                .new_host_key()
                .map(|fp| format!(" (new host key recorded: {fp})"));
            session.close().await;
            Ok::<_, anyhow::Error>((
                crate::modules::probe_util::key_values(&out.stdout_str()),
                note,
            ))
        }
    })));
    let mut failures = 0;
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok((kv, note)) => {
                let get = |k: &str| kv.get(k).cloned().unwrap_or_else(|| "?".into());
                let sudo = match get("sudo").as_str() {
                    "root" => "logged in as root".to_string(),
                    "yes" => "sudo works".to_string(),
                    _ if host.ssh.become_root => {
                        failures += 1;
                        "sudo -n FAILS (become is set: give the user passwordless sudo)".to_string()
                    }
                    _ => "no sudo (become is off)".to_string(),
                };
                println!(
                    "{}: ok: {} as {}, {}{}",
                    host.name,
                    get("os"),
                    get("user"),
                    sudo,
                    note.unwrap_or_default()
                );
            }
            Err(e) => {
                failures += 1;
                println!("{}: UNREACHABLE: {e:#}", host.name);
            }
        }
    }
    Ok(if failures == 0 {
        exit::OK
    } else {
        exit::FAILED
    })
}
