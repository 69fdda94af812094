//! Drop-in compatibility with configmap-reload and prometheus-config-reloader.
//!
//! Their flags are declared in [`cli`](super::cli) as aliases of ours (`--volume-dir` of
//! `--watch`, `--watched-dir` of `--watch`, `--listen-address` of `--listen`, ...). This module
//! tells which tool's flags a command line uses, because that decides two things: the defaults
//! that tool had (prometheus-config-reloader calls `http://127.0.0.1:9090/-/reload` when no
//! target is given, and signals `prometheus` with `--reload-method=signal`), and which of its
//! metric series the daemon also exports (`--compat-metrics`, on by default for the tool whose
//! flags are used) so that existing dashboards and alerts keep working.

use std::ffi::OsString;

use clap::ValueEnum;
use serde::Serialize;

/// configmap-reload's flags (all aliases of ours).
const CONFIGMAP_RELOAD: [&str; 6] = [
    "volume-dir",
    "webhook-url",
    "webhook-method",
    "webhook-status-code",
    "webhook-retries",
    "web.listen-address",
];

/// prometheus-config-reloader's flags that are not ours too (`--reload-url`, `--reload-timeout`,
/// `--log-format` and `--log-level` are both tools'; `--reload-method` is theirs only with the
/// values `http` and `signal`, see [`reload_method`]).
const PROMETHEUS_CONFIG_RELOADER: [&str; 5] = [
    "watched-dir",
    "process-executable-name",
    "watch-interval",
    "delay-interval",
    "listen-address",
];

/// prometheus-config-reloader's default reload URL.
pub(crate) const PROMETHEUS_RELOAD_URL: &str = "http://127.0.0.1:9090/-/reload";

/// prometheus-config-reloader's default `--process-executable-name`.
pub(crate) const PROMETHEUS_PROCESS: &str = "prometheus";

/// Which other tools' flags a command line uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dialects {
    /// Any of configmap-reload's flags.
    pub configmap_reload: bool,
    /// Any of prometheus-config-reloader's own flags, or `--reload-method=http|signal`.
    pub prometheus_config_reloader: bool,
}

impl Dialects {
    /// The dialects of `argv` (the program name first). A flag is recognised as `--name` or
    /// `--name=value`, up to a `--` that ends the flags.
    pub(crate) fn of(argv: &[OsString]) -> Dialects {
        let mut d = Dialects::default();
        let mut args = argv.iter().skip(1).filter_map(|a| a.to_str());
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            if flag.is_empty() {
                break;
            }
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (flag, None),
            };
            d.configmap_reload |= CONFIGMAP_RELOAD.contains(&name);
            d.prometheus_config_reloader |= PROMETHEUS_CONFIG_RELOADER.contains(&name);
            if name == "reload-method" {
                let value = value.or_else(|| args.clone().next());
                d.prometheus_config_reloader |= value.is_some_and(|v| reload_method(v).is_some());
            }
        }
        d
    }
}

/// prometheus-config-reloader's `--reload-method` values, told apart from HTTP methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadMethod {
    /// `http`: a POST to the reload URL.
    Http,
    /// `signal`: SIGHUP to the process named by `--process-executable-name`.
    Signal,
}

/// `http` or `signal` (any case) as prometheus-config-reloader means them; `None` for an HTTP
/// method such as `POST`.
pub(crate) fn reload_method(value: &str) -> Option<ReloadMethod> {
    if value.eq_ignore_ascii_case("http") {
        Some(ReloadMethod::Http)
    } else if value.eq_ignore_ascii_case("signal") {
        Some(ReloadMethod::Signal)
    } else {
        None
    }
}

/// A tool whose metric series can be exported too (`--compat-metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompatMetric {
    /// prometheus-config-reloader's `reloader_*` series (the `ConfigReloaderSidecarErrors` alert).
    PrometheusConfigReloader,
    /// configmap-reload's `configmap_reload_*` series.
    ConfigmapReload,
    /// Neither, even when their flags are used.
    None,
}

/// Which other tools' series the daemon exports besides its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompatMetrics {
    /// `reloader_*`.
    pub prometheus_config_reloader: bool,
    /// `configmap_reload_*`.
    pub configmap_reload: bool,
}

impl CompatMetrics {
    /// What `--compat-metrics` asks for; without it, the series of the tools whose flags are used.
    pub(crate) fn choose(given: Option<&[CompatMetric]>, spoken: Dialects) -> CompatMetrics {
        match given {
            None => CompatMetrics {
                prometheus_config_reloader: spoken.prometheus_config_reloader,
                configmap_reload: spoken.configmap_reload,
            },
            Some(list) => CompatMetrics {
                prometheus_config_reloader: list.contains(&CompatMetric::PrometheusConfigReloader),
                configmap_reload: list.contains(&CompatMetric::ConfigmapReload),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(args: &[&str]) -> Dialects {
        let argv: Vec<OsString> = std::iter::once("secret-reloader")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        Dialects::of(&argv)
    }

    #[test]
    fn the_flags_tell_the_dialect() {
        assert_eq!(
            of(&["--watch", "/v", "--reload-url", "http://x/"]),
            Dialects::default()
        );
        assert!(of(&["--volume-dir=/v"]).configmap_reload);
        assert!(of(&["--web.listen-address", ":9533"]).configmap_reload);
        assert!(of(&["--watched-dir", "/v"]).prometheus_config_reloader);
        assert!(of(&["--listen-address=:8080"]).prometheus_config_reloader);
        assert!(of(&["--reload-method=signal"]).prometheus_config_reloader);
        assert!(of(&["--reload-method", "http"]).prometheus_config_reloader);
        assert!(!of(&["--reload-method", "POST"]).prometheus_config_reloader);
        // After `--`, nothing is a flag; a value is not a flag either.
        assert_eq!(of(&["--", "--volume-dir"]), Dialects::default());
        assert_eq!(of(&["--exec=--watched-dir"]), Dialects::default());
    }

    fn load(args: &[&str]) -> Result<crate::config::Loaded, String> {
        let argv = std::iter::once("secret-reloader").chain(args.iter().copied());
        let cli = crate::config::cli::Cli::try_from_argv(argv).map_err(|e| e.to_string())?;
        crate::config::Config::load(&cli.run).map_err(|e| e.to_string())
    }

    #[test]
    fn prometheus_config_reloader_command_lines_mean_what_they_meant() {
        use crate::action::ActionConfig;
        // Its flags alone: its default reload URL, said at start; its series on.
        let l = load(&[
            "--watched-dir",
            "/etc/prometheus",
            "--listen-address",
            ":8080",
        ])
        .unwrap();
        let t = &l.config.groups[0].targets;
        assert_eq!(t.len(), 1);
        match &t[0].action {
            ActionConfig::Http(h) => {
                assert_eq!(h.endpoint.label(), PROMETHEUS_RELOAD_URL);
                assert_eq!(h.method.as_str(), "POST");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("prometheus-config-reloader's default"))
        );
        assert!(l.config.compat_metrics.prometheus_config_reloader);
        assert!(!l.config.compat_metrics.configmap_reload);
        assert_eq!(l.config.listen.port(), 8080);

        // --reload-method=signal: SIGHUP to `prometheus`, no URL.
        let l = load(&["--watched-dir=/etc/prometheus", "--reload-method=signal"]).unwrap();
        match &l.config.groups[0].targets[..] {
            [t] => match &t.action {
                ActionConfig::Signal(s) => {
                    assert_eq!(s.signal, Some(nix::sys::signal::Signal::SIGHUP));
                    assert_eq!(s.selector.short(), "prometheus");
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let l = load(&[
            "--watched-dir=/etc/prometheus",
            "--reload-method=signal",
            "--process-executable-name=alertmanager",
            "--reload-url=http://127.0.0.1:9093/-/reload",
        ])
        .unwrap();
        assert_eq!(l.config.groups[0].targets.len(), 1);
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("--reload-url is not used"))
        );

        // Its log names, durations and the fixed interval it had.
        let l = load(&[
            "--watched-dir=/etc/prometheus",
            "--reload-url=http://127.0.0.1:9090/-/reload",
            "--log-format=logfmt",
            "--log-level=all",
            "--watch-interval=3m0s",
            "--delay-interval=1s",
            "--retry-interval=5s",
        ])
        .unwrap();
        assert_eq!(l.config.log_format, crate::config::LogFormat::Text);
        assert_eq!(l.config.log_level, crate::config::LogLevel::Trace);
        assert_eq!(
            l.config.resync_interval,
            Some(std::time::Duration::from_secs(180))
        );
        assert_eq!(
            l.config.groups[0].debounce,
            std::time::Duration::from_secs(1)
        );
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("--retry-interval is not used"))
        );

        // What it did and this daemon does not: refused, saying what to do.
        let e = load(&[
            "--watched-dir=/etc/prometheus",
            "--config-file=/etc/prometheus/prometheus.yaml.gz",
            "--config-envsubst-file=/etc/prometheus/config_out/prometheus.env.yaml",
        ])
        .unwrap_err();
        assert!(e.contains("never writes files"), "{e}");
        let e = load(&["--watched-dir=/x", "--web-config-file=/w.yml"]).unwrap_err();
        assert!(e.contains("--web-config-file"), "{e}");
        // An HTTP method is still an HTTP method.
        let l = load(&[
            "--watch=/x",
            "--reload-url=http://127.0.0.1:1/",
            "--reload-method=PUT",
        ])
        .unwrap();
        assert!(!l.config.compat_metrics.prometheus_config_reloader);
    }

    #[test]
    fn configmap_reload_command_lines_turn_on_its_series() {
        let l = load(&[
            "--volume-dir=/etc/config",
            "--webhook-url=http://127.0.0.1:9090/-/reload",
        ])
        .unwrap();
        assert!(l.config.compat_metrics.configmap_reload);
        assert!(!l.config.compat_metrics.prometheus_config_reloader);
        let l = load(&[
            "--volume-dir=/etc/config",
            "--webhook-url=http://127.0.0.1:9090/-/reload",
            "--compat-metrics=none",
        ])
        .unwrap();
        assert_eq!(l.config.compat_metrics, CompatMetrics::default());
        let l = load(&[
            "--watch=/etc/config",
            "--reload-url=http://127.0.0.1:9090/-/reload",
            "--compat-metrics=prometheus-config-reloader,configmap-reload",
        ])
        .unwrap();
        assert!(l.config.compat_metrics.configmap_reload);
        assert!(l.config.compat_metrics.prometheus_config_reloader);
    }

    #[test]
    fn an_explicit_list_wins_over_the_dialect() {
        let both = Dialects {
            configmap_reload: true,
            prometheus_config_reloader: true,
        };
        let chosen = CompatMetrics::choose(None, both);
        assert!(chosen.configmap_reload && chosen.prometheus_config_reloader);
        let none = CompatMetrics::choose(Some(&[CompatMetric::None]), both);
        assert_eq!(none, CompatMetrics::default());
        let one =
            CompatMetrics::choose(Some(&[CompatMetric::ConfigmapReload]), Dialects::default());
        assert!(one.configmap_reload && !one.prometheus_config_reloader);
    }
}
