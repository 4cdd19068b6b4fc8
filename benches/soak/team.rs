//! The soak's team, set up as a user would with the CLI: the victim V
//! creates the team and admits the two peers P1 and P2 (`huddle init`,
//! `team create`, `team admit`, `team join`); P1 and P2 then run for the
//! whole soak, V only between kills.
//!
//! Invariant: every address is on 127.0.0.1 and every `huddle run` has
//! mDNS off; every wait has a deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use huddle::api::client::ApiClient;
use huddle::api::types::NewConversation;
use huddle::datadir::ApiInfo;
use huddle::{ConversationId, MemberId};

use crate::child::{api_info_of, cli, Run};

/// How long a start, or the mesh forming, may take.
pub const START_WITHIN: Duration = Duration::from_secs(60);

/// A peer that runs for the whole soak.
pub struct Peer {
    /// Kept only so that the process lives as long as the soak.
    _run: Run,
    pub addr: String,
    /// Its API (it runs for the whole soak, so this stays valid).
    pub api: ApiInfo,
    pub member: MemberId,
}

/// The three data directories, and the two peers running.
pub struct Team {
    pub v_dir: PathBuf,
    pub p: [Peer; 2],
}

fn json(out: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(out).map_err(|e| format!("CLI JSON: {e}: {out}"))
}

/// `huddle init` on `dir`; its device id and member id.
fn init(dir: &Path, name: &str) -> Result<(String, String), String> {
    let v = json(&cli(
        dir,
        &["--json", "init", "--name", name, "--role", "nurse"],
    )?)?;
    let field = |f: &str| {
        v[f].as_str()
            .map(str::to_owned)
            .ok_or(format!("init printed no {f}"))
    };
    Ok((field("device")?, field("member")?))
}

impl Team {
    pub fn create(root: &Path) -> Result<Team, String> {
        let v_dir = root.join("v");
        init(&v_dir, "Vic Adeyemi")?;
        cli(&v_dir, &["team", "create", "Soak Ward"])?;
        let mut peers = Vec::new();
        for (i, name) in ["Pia Novak", "Priya Shah"].into_iter().enumerate() {
            let dir = root.join(format!("p{}", i + 1));
            let (device, member) = init(&dir, name)?;
            let admitted = json(&cli(
                &v_dir,
                &[
                    "--json", "team", "admit", &device, "--name", name, "--role", "nurse",
                    "--member", &member,
                ],
            )?)?;
            let token = admitted["token"].as_str().ok_or("admit printed no token")?;
            cli(&dir, &["team", "join", token])?;
            let run = Run::spawn(&dir, &[], &root.join(format!("p{}.log", i + 1)))?;
            let addr = run.listen_addr(START_WITHIN)?;
            let api = api_info_of(&dir, run.pid, START_WITHIN)?;
            let member = member.parse().map_err(|_| "init printed a bad member id")?;
            peers.push(Peer {
                _run: run,
                addr,
                api,
                member,
            });
        }
        let p: [Peer; 2] = peers.try_into().map_err(|_| "two peers".to_owned())?;
        Ok(Team { v_dir, p })
    }

    /// Where V dials its peers.
    pub fn peer_addrs(&self) -> Vec<String> {
        self.p.iter().map(|p| p.addr.clone()).collect()
    }

    /// Creates a group of the three on V (whose directory must first hold
    /// both peers: they are learnt by connecting), and waits until both
    /// peers hold it, so that they can write to it.
    pub fn new_group(&self, v: &ApiClient, title: &str) -> Result<ConversationId, String> {
        let members: Vec<MemberId> = self.p.iter().map(|p| p.member).collect();
        wait_for(&format!("V to know both peers before {title}"), || {
            let dir = v.directory().map_err(|e| e.to_string())?;
            Ok(members.iter().all(|m| dir.iter().any(|d| d.member == *m)))
        })?;
        let conv = v
            .create(&NewConversation::Group {
                title: title.into(),
                members,
            })
            .map_err(|e| format!("create {title}: {e}"))?;
        for (i, p) in self.p.iter().enumerate() {
            let api = ApiClient::new(p.api.clone());
            wait_for(&format!("P{} to hold {title}", i + 1), || {
                Ok(api
                    .chats()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .any(|c| c.id == conv))
            })?;
        }
        Ok(conv)
    }
}

/// Polls `holds` until it is true, with a deadline of [`START_WITHIN`].
pub fn wait_for(what: &str, mut holds: impl FnMut() -> Result<bool, String>) -> Result<(), String> {
    let deadline = Instant::now() + START_WITHIN;
    let mut last = String::new();
    while Instant::now() < deadline {
        match holds() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "timed out waiting for {what} ({START_WITHIN:?}) {last}"
    ))
}
