//! The daemon shell: binds the SIP sockets, runs the SIP driver around the sans-IO
//! [`Endpoint`], spawns call tasks, and drains on shutdown.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::call::{self, CallCommand, CallEvent, CallShared};
use crate::runtime::call_marker;
use crate::runtime::case_writer;
use crate::runtime::http::Readiness;
use crate::runtime::media_clock::MediaClock;
use crate::runtime::outbox::Outbox;
use crate::runtime::ports::RtpPortPool;
use crate::runtime::recorder::RecordingWriter;
use crate::runtime::transport::{self, TransportEvent, UdpSenders};
use crate::sip::header::Transport;
use crate::sip::uas::{CallHandle, ConnId, Destination, Endpoint, Inbound, Output};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {transport} {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("dialplan or prompts refused: {0}")]
    Dialplan(#[from] crate::runtime::plans::PlanLoadError),
}

/// A bound, not yet running server. Binding first lets tests use port 0 and read the ports.
pub struct Server {
    config: Config,
    metrics_listener: TcpListener,
    plans: crate::runtime::plans::PlanStore,
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
    ready: Readiness,
}

impl Server {
    /// Binds every `[sip] listen` address over UDP and TCP.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        crate::runtime::fd_limit::raise_and_report(
            config.sip.max_calls,
            config.sip.max_tcp_connections,
        );
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in &config.sip.listen {
            let u = transport::bind_udp(*addr).map_err(|source| ServerError::Bind {
                transport: "UDP",
                addr: *addr,
                source,
            })?;
            // With port 0, TCP takes the port UDP got when it is free, so both share one port.
            let tcp_addr = match (addr.port(), u.local_addr()) {
                (0, Ok(bound)) => bound,
                _ => *addr,
            };
            let t = transport::bind_tcp(tcp_addr)
                .or_else(|_| transport::bind_tcp(*addr))
                .map_err(|source| ServerError::Bind {
                    transport: "TCP",
                    addr: *addr,
                    source,
                })?;
            udp.push(Arc::new(u));
            tcp.push(t);
        }
        config.rtp_port_range().map_err(ServerError::Config)?;
        let plans =
            crate::runtime::plans::PlanStore::load(&config.dialplan.path, &config.prompts.dir)?;
        let metrics_addr = config.metrics.listen;
        let metrics_listener =
            transport::bind_tcp(metrics_addr).map_err(|source| ServerError::Bind {
                transport: "HTTP",
                addr: metrics_addr,
                source,
            })?;
        Ok(Server {
            config,
            metrics_listener,
            plans,
            udp,
            tcp,
            ready: Readiness::new(),
        })
    }

    /// Readiness as `/readyz` reports it: ready once storage is open, interrupted calls are
    /// spooled and SIP requests are being handled; not ready again while draining.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// The bound UDP addresses.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// The bound metrics/health HTTP address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.local_addr().ok()
    }

    /// The bound TCP addresses.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Runs until `shutdown` is cancelled and the drain is over.
    pub async fn run(self, shutdown: CancellationToken) {
        // Before anything is logged: from "SIP listening" on, a SIGHUP must find its handler
        // rather than end the process (tests and operators reload right after start-up).
        let hangup = SighupStream::new();
        let (events_tx, events_rx) = mpsc::channel(4096);
        let stop_io = CancellationToken::new();
        for socket in &self.udp {
            tokio::spawn(transport::run_udp(
                socket.clone(),
                events_tx.clone(),
                stop_io.clone(),
            ));
        }
        let limits = transport::TcpLimits {
            max_connections: self.config.sip.max_tcp_connections,
            idle: Duration::from_secs(self.config.sip.tcp_idle_secs),
            partial_message: Duration::from_secs(self.config.sip.tcp_message_secs),
        };
        for listener in self.tcp {
            tokio::spawn(transport::run_tcp(
                listener,
                events_tx.clone(),
                limits,
                stop_io.clone(),
            ));
        }
        drop(events_tx);
        tracing::info!(udp = ?self.udp.iter().filter_map(|s| s.local_addr().ok()).collect::<Vec<_>>(), "SIP listening (UDP and TCP)");
        let (first, last) = self.config.rtp_port_range().unwrap_or((20000, 29999));
        let bind_ip = self
            .config
            .sip
            .listen
            .first()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let serving = self.plans.current();
        let plan = serving.plan.clone();
        tracing::info!(plan = plan.name(), version = plan.version(), sha256 = %plan.sha256, prompts = serving.prompts.len(), "dialplan loaded");
        let metrics = match Metrics::new() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "metrics registry failed; cannot run");
                return;
            }
        };
        metrics.set_dialplan(plan.name(), plan.version(), &plan.sha256);
        let ready = self.ready.clone();
        let stop_http = CancellationToken::new();
        tokio::spawn(crate::runtime::http::serve(
            self.metrics_listener,
            metrics.clone(),
            ready.clone(),
            stop_http.clone(),
        ));
        let (recorder, outbox) = start_storage(&self.config, &metrics, stop_io.clone()).await;
        let (markers, interrupted) =
            call_marker::open(&self.config.storage.dir, self.config.sip.max_calls).await;
        let cases = Arc::new(case_writer::CaseSpool::new(
            &self.config.storage.dir,
            outbox,
        ));
        let stop_cases = CancellationToken::new();
        let case_retry = tokio::spawn(case_writer::run_retry(
            cases.clone(),
            Duration::from_secs(5),
            stop_cases.clone(),
        ));
        let media = match MediaClock::start(
            self.config.media.clock_threads(),
            self.config.media.clock_priority,
            metrics.clone(),
        ) {
            Ok(clock) => clock,
            Err(e) => {
                tracing::error!(error = %e, "media clock failed; cannot run");
                return;
            }
        };
        let udp_senders = UdpSenders::new(&self.udp);
        let shared = Arc::new(CallShared {
            plans: self.plans,
            sip_udp: udp_senders.clone(),
            media_timeout: Duration::from_secs(self.config.media.media_timeout_secs),
            media,
            cname: format!("ivrd@{bind_ip}"),
            recorder,
            cases: cases.clone(),
            metrics: metrics.clone(),
            host: hostname(),
            markers: markers.clone(),
        });
        // Calls a crash interrupted become abandoned cases before new calls are taken.
        call_marker::spool_interrupted(&markers, interrupted, &shared.cases).await;
        // Ready only once recordings and cases have somewhere to go and SIP is served.
        ready.set_sip_bound(true);
        ready.set_dialplan_loaded(true);
        let driver = SipDriver {
            shared,
            tasks: tokio::task::JoinSet::new(),
            endpoint: Endpoint::new(self.config.endpoint()),
            ports: RtpPortPool::new(bind_ip, first, last),
            udp: udp_senders,
            tcp_writers: HashMap::new(),
            calls: HashMap::new(),
            local_ips: HashMap::new(),
            drain: Duration::from_secs(self.config.sip.drain_secs),
        };
        // On a worker thread rather than on the caller's (often `block_on`'s) own thread: the
        // transports and call tasks that wake the driver run on the workers, and a wake within
        // the runtime costs less than waking a thread of its own for every SIP message.
        let driving = tokio::spawn(driver.run(events_rx, hangup, shutdown, ready));
        if let Err(e) = driving.await {
            tracing::error!(error = %e, "SIP driver failed");
        }
        stop_cases.cancel();
        let _ = case_retry.await;
        stop_io.cancel();
        stop_http.cancel();
    }
}

/// The tokio side of the UAS core.
struct SipDriver {
    shared: Arc<CallShared>,
    /// Call tasks and case writers; awaited at shutdown so no case is lost.
    tasks: tokio::task::JoinSet<()>,
    endpoint: Endpoint,
    ports: RtpPortPool,
    udp: UdpSenders,
    tcp_writers: HashMap<ConnId, mpsc::Sender<Bytes>>,
    calls: HashMap<CallHandle, mpsc::Sender<CallEvent>>,
    local_ips: HashMap<IpAddr, IpAddr>,
    drain: Duration,
}

impl SipDriver {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<TransportEvent>,
        mut hangup: SighupStream,
        shutdown: CancellationToken,
        ready: Readiness,
    ) {
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<CallCommand>(1024);
        let mut drain_deadline: Option<Instant> = None;
        let mut hung_up_all = false;
        loop {
            let timer = self.endpoint.poll_timeout();
            tokio::select! {
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    tracing::info!(active_calls = self.endpoint.active_calls(), drain_secs = self.drain.as_secs(), "draining: new calls get 503");
                    self.endpoint.begin_drain();
                    ready.set_draining(true);
                    drain_deadline = Some(Instant::now() + self.drain);
                }
                event = events.recv() => match event {
                    Some(event) => self.on_transport(event, &cmd_tx),
                    None => break,
                },
                Some(cmd) = cmd_rx.recv() => match cmd {
                    CallCommand::HangUp { call, reason } => {
                        self.endpoint.hang_up(Instant::now(), call, reason, &mut self.ports);
                    }
                    CallCommand::Transfer { call, request } => {
                        if !self.endpoint.transfer(Instant::now(), call, &request) {
                            let outcome = crate::sip::uas::TransferOutcome::Failed { code: None };
                            self.to_call(call, CallEvent::Transfer { outcome });
                        }
                    }
                    CallCommand::SendAnswer(answer) => self.send(answer.to, answer.bytes).await,
                },
                _ = sleep_until(timer) => self.endpoint.handle_timeout(Instant::now(), &mut self.ports),
                _ = hangup.recv() => self.reload_plan(),
                _ = sleep_until(drain_deadline.filter(|_| !hung_up_all)) => {
                    tracing::info!(active_calls = self.endpoint.active_calls(), "drain time over; hanging up");
                    self.endpoint.hang_up_all(Instant::now(), &mut self.ports);
                    hung_up_all = true;
                }
            }
            self.flush_outputs(&cmd_tx).await;
            self.observe();
            if drain_deadline.is_some()
                && self.endpoint.active_calls() == 0
                && self.endpoint.pending_requests() == 0
            {
                tracing::info!("drain complete");
                break;
            }
        }
        // Every call task finishes its recordings and spools its case before we exit.
        let wait = tokio::time::timeout(Duration::from_secs(30), async {
            while self.tasks.join_next().await.is_some() {}
        });
        if wait.await.is_err() {
            tracing::error!(
                left = self.tasks.len(),
                "call tasks did not finish within 30 s"
            );
        }
    }

    fn observe(&mut self) {
        let metrics = &self.shared.metrics;
        metrics.observe_sip_counters(self.endpoint.counters());
        metrics.set_active_calls(self.endpoint.active_calls());
        let (in_use, size) = self.ports.usage();
        metrics.set_rtp_ports(in_use, size);
        if let Some(recorder) = &self.shared.recorder {
            let (queued, capacity) = recorder.queue();
            metrics.set_recording_queue(queued, capacity);
        }
        while self.tasks.try_join_next().is_some() {}
    }

    fn on_transport(&mut self, event: TransportEvent, _cmd_tx: &mpsc::Sender<CallCommand>) {
        match event {
            TransportEvent::Message {
                transport,
                source,
                local,
                conn,
                data,
            } => {
                let local = self.advertised(local, source.ip());
                let inbound = Inbound {
                    transport,
                    source,
                    local,
                    conn,
                    data: &data,
                };
                self.endpoint
                    .handle_inbound(Instant::now(), inbound, &mut self.ports);
            }
            TransportEvent::Opened { conn, writer } => {
                self.tcp_writers.insert(conn, writer);
            }
            TransportEvent::Closed { conn } => {
                self.tcp_writers.remove(&conn);
            }
            TransportEvent::Unframeable { source } => {
                tracing::debug!(%source, "unframeable TCP stream closed");
            }
        }
    }

    /// Our address as `peer` reaches it: the bound address, or for a wildcard bind the source
    /// address the kernel picks towards the peer (cached per peer).
    fn advertised(&mut self, bound: SocketAddr, peer: IpAddr) -> SocketAddr {
        if !bound.ip().is_unspecified() {
            return bound;
        }
        let ip = *self
            .local_ips
            .entry(peer)
            .or_insert_with(|| route_source(peer).unwrap_or(bound.ip()));
        SocketAddr::new(ip, bound.port())
    }

    async fn flush_outputs(&mut self, cmd_tx: &mpsc::Sender<CallCommand>) {
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                Output::Transmit { to, bytes } => self.send(to, bytes).await,
                Output::CallStarted { call, info, answer } => {
                    let (tx, rx) = mpsc::channel(64);
                    let sockets = self.ports.take(info.rtp_port);
                    let shared = self.shared.clone();
                    let start = call::NewCall {
                        handle: call,
                        info,
                        answer,
                        sockets,
                    };
                    call::spawn(&mut self.tasks, start, rx, cmd_tx.clone(), shared);
                    self.calls.insert(call, tx);
                }
                Output::MediaChanged {
                    call,
                    audio,
                    our_direction,
                } => {
                    self.to_call(
                        call,
                        CallEvent::MediaChanged {
                            audio,
                            our_direction,
                        },
                    );
                }
                Output::Info {
                    call,
                    content_type,
                    body,
                } => self.to_call(call, CallEvent::Info { content_type, body }),
                Output::Transfer { call, outcome } => {
                    self.to_call(call, CallEvent::Transfer { outcome })
                }
                Output::CallRefused {
                    call_id,
                    caller,
                    called,
                    trunk,
                    received,
                } => {
                    let shared = self.shared.clone();
                    self.tasks.spawn(async move {
                        let case_id = case_writer::new_case_id();
                        let case = case_writer::refused_case(
                            &case_id,
                            &call_id,
                            &caller,
                            &called,
                            &trunk.to_string(),
                            received,
                            &shared.host,
                        );
                        shared.cases.spool(case_id, &case).await;
                    });
                }
                Output::CallEnded { call, reason } => {
                    if let Some(tx) = self.calls.remove(&call) {
                        let _ = tx.try_send(CallEvent::Ended { reason });
                    }
                }
            }
        }
    }

    /// SIGHUP: a valid plan serves new calls; an invalid one is refused and the old one stays.
    /// SIGHUP: reads and validates the plan and prompts on the blocking pool (the SIP loop keeps
    /// running); a valid set serves new calls, an invalid one is refused and the old one stays.
    fn reload_plan(&self) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let store = shared.clone();
            let result = tokio::task::spawn_blocking(move || store.plans.reload()).await;
            let metrics = &shared.metrics;
            match result {
                Ok(Ok(serving)) => {
                    let plan = &serving.plan;
                    // `ivrd_dialplan_info` must name the plan new calls use, as the cases do.
                    metrics.set_dialplan(plan.name(), plan.version(), &plan.sha256);
                    metrics.dialplan_reload_succeeded();
                    tracing::info!(plan = plan.name(), version = plan.version(), sha256 = %plan.sha256, prompts = serving.prompts.len(), "dialplan reloaded; new calls use it");
                }
                Ok(Err(e)) => {
                    metrics.dialplan_reload_failed();
                    let reason = e.one_line();
                    tracing::error!(%reason, "dialplan reload refused; the previous plan keeps serving");
                }
                Err(e) => {
                    metrics.dialplan_reload_failed();
                    tracing::error!(error = %e, "dialplan reload task failed; the previous plan keeps serving");
                }
            }
        });
    }

    fn to_call(&self, call: CallHandle, event: CallEvent) {
        if let Some(tx) = self.calls.get(&call) {
            if tx.try_send(event).is_err() {
                tracing::warn!(%call, "call task is not keeping up; event dropped");
            }
        }
    }

    async fn send(&mut self, to: Destination, bytes: Bytes) {
        match to.transport {
            Transport::Udp => self.udp.send(to.addr, &bytes).await,
            Transport::Tcp => {
                let writer = to.conn.and_then(|c| self.tcp_writers.get(&c));
                match writer {
                    Some(w) => {
                        let _ = w.try_send(bytes);
                    }
                    None => tracing::debug!(to = %to.addr, "TCP connection gone; message not sent"),
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The local address the kernel would use to reach `peer` (no packet is sent).
fn route_source(peer: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = StdUdpSocket::bind(any).ok()?;
    socket.connect(SocketAddr::new(peer, 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// SIGHUP as a stream; never fires where the handler cannot be installed.
struct SighupStream(Option<tokio::signal::unix::Signal>);

impl SighupStream {
    fn new() -> Self {
        SighupStream(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
    }

    async fn recv(&mut self) {
        match self.0.as_mut() {
            Some(sig) => {
                if sig.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// Repairs recordings a crash left behind, then starts the recording writer, the case outbox and
/// its delivery worker. A failure of either store is logged and counted; calls are still answered.
async fn start_storage(
    config: &Config,
    metrics: &Arc<Metrics>,
    stop: CancellationToken,
) -> (Option<RecordingWriter>, Option<Outbox>) {
    let dir = config.storage.dir.clone();
    let repair_dir = dir.clone();
    if let Ok(report) = tokio::task::spawn_blocking(move || {
        crate::runtime::recording_repair::repair_orphans(&repair_dir)
    })
    .await
    {
        metrics.recordings_repaired(report.repaired.len() as u64);
        for r in &report.repaired {
            tracing::warn!(path = %r.path.display(), duration_ms = r.duration_ms, "recording repaired after a crash");
        }
        for b in &report.broken {
            tracing::error!(path = %b.display(), "unrepairable recording set aside");
        }
    }
    let queue_blocks = config.sip.max_calls.saturating_mul(4).max(64);
    let recorder = RecordingWriter::spawn_timed(
        &dir,
        queue_blocks,
        Some(metrics.recording_writer_ops()),
    )
    .map_err(
        |e| tracing::error!(error = %e, "recording writer not started; calls will not be recorded"),
    )
    .ok();
    let outbox = Outbox::open(&dir)
        .map_err(
            |e| tracing::error!(error = %e, "case outbox not opened; cases will only be logged"),
        )
        .ok();
    if let Some(outbox) = &outbox {
        let delivery = (!config.intake.url.is_empty()).then(|| {
            let secret = (!config.intake.secret.is_empty()).then(|| config.intake.secret.clone());
            crate::runtime::delivery::DeliveryConfig::new(config.intake.url.clone(), secret)
        });
        crate::runtime::outbox_metrics::spawn(outbox.clone(), metrics.clone(), stop.clone());
        crate::runtime::delivery::spawn_delivery(outbox.clone(), delivery, stop);
    }
    (recorder, outbox)
}

/// This host's name for case provenance.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
