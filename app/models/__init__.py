"""All models, imported here so metadata and relationships are complete wherever one is used."""
from app.models.api_keys import ApiKey, IdempotencyKey
from app.models.attributions import Attribution
from app.models.base import Base, utcnow
from app.models.bounces import BounceCount, BounceEvent, BounceMail, BounceStreak
from app.models.campaigns import Audience, Campaign, CampaignChannel, CampaignSendOptions, DeletedCampaign
from app.models.contacts import (
    ConsentChange,
    Contact,
    ContactActivity,
    ContactIdentity,
    ContactTimezone,
    PushSubscription,
)
from app.models.conversations import Conversation, Message
from app.models.data_sources import DataEvent, DataSource
from app.models.deliveries import AbTest, Delivery, HeldReceipt, LedgerPreparation, MessageLink, SendProblem
from app.models.flows import Flow, FlowEnrollment, FlowStep
from app.models.ingestion import (
    EventDedupeKey,
    EventFailure,
    IngestKey,
    ShopifyWebhookRegistration,
    ShopifyWebhookRemoval,
    SyncRun,
)
from app.models.provider_accounts import ProviderAccount
from app.models.senders import Sender
from app.models.settings import MerchantSettings
from app.models.suppressions import Suppression
from app.models.users import AccountDeletion, EmailVerification, TokenBlacklist, User, UserSession
from app.models.webhooks import WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "Base",
    "utcnow",
    "User",
    "UserSession",
    "TokenBlacklist",
    "EmailVerification",
    "AccountDeletion",
    "ApiKey",
    "IdempotencyKey",
    "DataSource",
    "DataEvent",
    "Conversation",
    "Message",
    "Campaign",
    "CampaignChannel",
    "Audience",
    "CampaignSendOptions",
    "AbTest",
    "DeletedCampaign",
    "Delivery",
    "Flow",
    "FlowStep",
    "FlowEnrollment",
    "MessageLink",
    "HeldReceipt",
    "SendProblem",
    "Attribution",
    "MerchantSettings",
    "Suppression",
    "LedgerPreparation",
    "Contact",
    "ContactIdentity",
    "ContactTimezone",
    "ConsentChange",
    "ContactActivity",
    "PushSubscription",
    "IngestKey",
    "EventDedupeKey",
    "EventFailure",
    "SyncRun",
    "ShopifyWebhookRegistration",
    "ShopifyWebhookRemoval",
    "ProviderAccount",
    "BounceEvent",
    "BounceCount",
    "BounceStreak",
    "BounceMail",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookDelivery",
    "Sender",
]
