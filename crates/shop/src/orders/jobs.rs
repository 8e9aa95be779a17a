//! The jobs of orders: their payloads and kinds.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::jobs::JobPayload;

/// `payments.settle`: asks the provider about an order still `pendingPayment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlePaymentJob {
    pub order_id: Uuid,
}

impl JobPayload for SettlePaymentJob {
    const KIND: &'static str = "payments.settle";
}

/// `payments.refund`: refunds an order's charge and marks it refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundPaymentJob {
    pub order_id: Uuid,
}

impl JobPayload for RefundPaymentJob {
    const KIND: &'static str = "payments.refund";
}

/// `orders.send_confirmation`: mails the buyer of a paid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderConfirmationJob {
    pub order_id: Uuid,
}

impl JobPayload for OrderConfirmationJob {
    const KIND: &'static str = "orders.send_confirmation";
}
