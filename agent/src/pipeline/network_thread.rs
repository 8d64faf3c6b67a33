//! The network pipeline on a thread of its own, with its own event loop, so that nothing the
//! profile pipeline does (naming the frames of a new binary, building an export) keeps it from
//! reading the network ring: at saturation the ring holds well under a second of records, and a
//! long pause of the main loop lost thousands of them.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{anyhow, Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::sync::oneshot;

use super::network::{NetworkOutputs, NetworkPipeline};
use crate::{clock::Clock, links::SpanLinks, otlp::resource::HostInfo, process::identity::Identities};

/// What the network pipeline is built from (see [`NetworkPipeline::new`]).
pub struct NetworkParts {
    pub outputs: NetworkOutputs,
    pub ring: Option<RingBuf<MapData>>,
    pub identities: Arc<Identities>,
    pub host: HostInfo,
    pub clock: Clock,
    pub sample_ratio: f64,
    /// Where server spans with CPU samples are published for the profile pipeline.
    pub links: Option<Arc<SpanLinks>>,
}

/// How often the thread's loop does each of its periodic jobs.
#[derive(Debug, Clone, Copy)]
pub struct NetworkTimers {
    pub drain: Duration,
    pub export: Duration,
    pub expire: Duration,
}

/// The running thread.
pub struct NetworkThread {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<NetworkPipeline>>,
    /// The kernel's count of lost network records, published by the main loop (which owns
    /// the counters) for the thread's `oxeye.net.records.lost`.
    losses: Arc<AtomicU64>,
}

impl NetworkThread {
    /// Builds the pipeline on a new thread (its ring registered with that thread's event
    /// loop) and runs it until [`Self::stop`].
    pub fn spawn(parts: NetworkParts, timers: NetworkTimers) -> Result<Self> {
        let (stop, stopped) = oneshot::channel();
        let (ready, started) = mpsc::channel();
        let losses = Arc::new(AtomicU64::new(0));
        let published = Arc::clone(&losses);
        let handle = thread::Builder::new()
            .name("oxeye-net".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the network thread's event loop")?;
                runtime.block_on(async move {
                    let built = NetworkPipeline::new(parts.outputs, parts.ring, parts.identities, parts.host, parts.clock, parts.sample_ratio, parts.links);
                    let mut pipeline = match built {
                        Ok(pipeline) => {
                            let _ = ready.send(Ok(()));
                            pipeline
                        }
                        Err(error) => {
                            let _ = ready.send(Err(format!("{error:#}")));
                            return Err(error);
                        }
                    };
                    run(&mut pipeline, timers, &published, stopped).await?;
                    Ok(pipeline)
                })
            })
            .context("cannot start the network thread")?;
        match started.recv() {
            Ok(Ok(())) => Ok(NetworkThread { stop, handle, losses }),
            Ok(Err(error)) => Err(anyhow!(error)),
            Err(_) => Err(match handle.join() {
                Ok(Err(error)) => error,
                _ => anyhow!("the network thread ended before it started"),
            }),
        }
    }

    /// Publishes the kernel's count of lost network records.
    pub fn set_losses(&self, lost: u64) {
        self.losses.store(lost, Ordering::Relaxed);
    }

    /// Stops the loop and hands the pipeline back, to be finished once the programs are
    /// detached.
    pub fn stop(self) -> Result<NetworkPipeline> {
        let _ = self.stop.send(());
        self.handle.join().map_err(|_| anyhow!("the network thread panicked"))?
    }
}

/// The thread's loop: reads on wake-ups and on a timer, exports, forgets idle connections.
async fn run(pipeline: &mut NetworkPipeline, timers: NetworkTimers, losses: &AtomicU64, mut stopped: oneshot::Receiver<()>) -> Result<()> {
    let mut drain_tick = super::ticker(timers.drain);
    let mut export_tick = super::ticker(timers.export);
    let mut expire_tick = super::ticker(timers.expire);
    let exporting = pipeline.exporting();
    loop {
        tokio::select! {
            readable = pipeline.readable() => readable?,
            _ = drain_tick.tick() => {
                pipeline.drain();
                pipeline.count_losses(losses.load(Ordering::Relaxed));
            }
            _ = export_tick.tick(), if exporting => pipeline.report(),
            _ = expire_tick.tick() => pipeline.expire(),
            _ = &mut stopped => return Ok(()),
        }
    }
}
