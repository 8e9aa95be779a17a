//! How the payment sandbox answers its `/v1` API: like a healthy provider, declining cards, slowly,
//! not at all, with errors or garbage, or — the case that matters most — charging and then
//! failing to say so.

use std::fmt;
use std::time::Duration;

/// How the payment sandbox answers the `/v1/...` endpoints. The `/sandbox/...` control endpoints
/// always answer normally.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PaymentMode {
    /// Charges and refunds succeed: a healthy provider.
    #[default]
    Approve,
    /// New charges are declined (`card_declined`) and recorded as such; nothing is charged.
    /// Refunds and reads work as in `Approve`.
    Decline,
    /// Does the work as soon as the request arrives and answers only after `delay`, so a client
    /// that gives up first has still been charged, as with a real slow provider.
    Slow { delay: Duration },
    /// Reads the request and never answers, keeping the connection open; does nothing.
    Hang,
    /// Answers this status (500, 503, …) with an error body; does nothing.
    Status(u16),
    /// 200 with a body that is not JSON; does nothing.
    Garbage,
    /// Does the work exactly as `Approve` would, then answers 500: charged, but the client
    /// never hears of it.
    ChargeThenFail,
    /// Does the work exactly as `Approve` would, then never answers.
    ChargeThenHang,
}

impl PaymentMode {
    /// Parses the names the command line and `PUT /sandbox/mode` use: `approve`, `decline`,
    /// `slow:500ms`, `slow:2s`, `hang`, `status:503`, `garbage`, `charge-then-fail`,
    /// `charge-then-hang`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (name, argument) = raw.split_once(':').unwrap_or((raw, ""));
        Ok(match name {
            "approve" => Self::Approve,
            "decline" => Self::Decline,
            "slow" => Self::Slow { delay: crate::parse_duration(argument, Duration::from_secs(2))? },
            "hang" => Self::Hang,
            "status" => {
                let status: u16 = argument.parse().map_err(|_| format!("bad status {argument:?}"))?;
                // An error mode: a 2xx or 3xx here would be a lie the client could not recognise.
                if !(400..=599).contains(&status) {
                    return Err(format!("status must be 400-599, got {status}"));
                }
                Self::Status(status)
            }
            "garbage" => Self::Garbage,
            "charge-then-fail" => Self::ChargeThenFail,
            "charge-then-hang" => Self::ChargeThenHang,
            _ => {
                return Err(format!(
                    "unknown payment mode {name:?}: approve, decline, slow:DUR, hang, status:CODE, garbage, \
                     charge-then-fail, charge-then-hang"
                ));
            }
        })
    }
}

/// The name [`PaymentMode::parse`] reads back.
impl fmt::Display for PaymentMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Approve => formatter.write_str("approve"),
            Self::Decline => formatter.write_str("decline"),
            Self::Slow { delay } if delay.subsec_nanos() == 0 => write!(formatter, "slow:{}s", delay.as_secs()),
            Self::Slow { delay } => write!(formatter, "slow:{}ms", delay.as_millis()),
            Self::Hang => formatter.write_str("hang"),
            Self::Status(status) => write!(formatter, "status:{status}"),
            Self::Garbage => formatter.write_str("garbage"),
            Self::ChargeThenFail => formatter.write_str("charge-then-fail"),
            Self::ChargeThenHang => formatter.write_str("charge-then-hang"),
        }
    }
}
