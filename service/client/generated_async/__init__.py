from .async_base_client import AsyncBaseClient
from .base_model import BaseModel
from .cancel_job import (
    CancelJob,
    CancelJobCancelJob,
    CancelJobCancelJobJob,
    CancelJobCancelJobUserErrors,
)
from .client import GeneratedAsyncClient
from .create_webhook_endpoint import (
    CreateWebhookEndpoint,
    CreateWebhookEndpointCreateWebhookEndpoint,
    CreateWebhookEndpointCreateWebhookEndpointEndpoint,
    CreateWebhookEndpointCreateWebhookEndpointUserErrors,
)
from .delete_job import DeleteJob, DeleteJobDeleteJob, DeleteJobDeleteJobUserErrors
from .enums import (
    AudioFormat,
    DeliveryStatus,
    ExportFormat,
    JobPriority,
    JobStatus,
    SigningScheme,
)
from .exceptions import (
    GraphQLClientError,
    GraphQLClientGraphQLError,
    GraphQLClientGraphQLMultiError,
    GraphQLClientHttpError,
    GraphQLClientInvalidResponseError,
)
from .fragments import JobFields, JobFieldsArtifact, JobFieldsError
from .generate_speech import (
    GenerateSpeech,
    GenerateSpeechGenerateSpeech,
    GenerateSpeechGenerateSpeechJob,
    GenerateSpeechGenerateSpeechUserErrors,
)
from .get_download import GetDownload, GetDownloadJob, GetDownloadJobArtifact
from .get_job import GetJob, GetJobJob
from .input_types import (
    CreateWebhookEndpointInput,
    GenerateSpeechInput,
    StartExportInput,
    UpdateWebhookEndpointInput,
)
from .job_updates import JobUpdates, JobUpdatesJobUpdates
from .list_jobs import ListJobs, ListJobsJobs, ListJobsJobsNodes, ListJobsJobsPageInfo
from .trigger_webhook_event import (
    TriggerWebhookEvent,
    TriggerWebhookEventTriggerWebhookEvent,
    TriggerWebhookEventTriggerWebhookEventUserErrors,
)
from .webhook_endpoints import WebhookEndpoints, WebhookEndpointsWebhookEndpoints
from .webhook_events import WebhookEvents, WebhookEventsWebhookEvents

__all__ = [
    "AsyncBaseClient",
    "AudioFormat",
    "BaseModel",
    "CancelJob",
    "CancelJobCancelJob",
    "CancelJobCancelJobJob",
    "CancelJobCancelJobUserErrors",
    "CreateWebhookEndpoint",
    "CreateWebhookEndpointCreateWebhookEndpoint",
    "CreateWebhookEndpointCreateWebhookEndpointEndpoint",
    "CreateWebhookEndpointCreateWebhookEndpointUserErrors",
    "CreateWebhookEndpointInput",
    "DeleteJob",
    "DeleteJobDeleteJob",
    "DeleteJobDeleteJobUserErrors",
    "DeliveryStatus",
    "ExportFormat",
    "GenerateSpeech",
    "GenerateSpeechGenerateSpeech",
    "GenerateSpeechGenerateSpeechJob",
    "GenerateSpeechGenerateSpeechUserErrors",
    "GenerateSpeechInput",
    "GeneratedAsyncClient",
    "GetDownload",
    "GetDownloadJob",
    "GetDownloadJobArtifact",
    "GetJob",
    "GetJobJob",
    "GraphQLClientError",
    "GraphQLClientGraphQLError",
    "GraphQLClientGraphQLMultiError",
    "GraphQLClientHttpError",
    "GraphQLClientInvalidResponseError",
    "JobFields",
    "JobFieldsArtifact",
    "JobFieldsError",
    "JobPriority",
    "JobStatus",
    "JobUpdates",
    "JobUpdatesJobUpdates",
    "ListJobs",
    "ListJobsJobs",
    "ListJobsJobsNodes",
    "ListJobsJobsPageInfo",
    "SigningScheme",
    "StartExportInput",
    "TriggerWebhookEvent",
    "TriggerWebhookEventTriggerWebhookEvent",
    "TriggerWebhookEventTriggerWebhookEventUserErrors",
    "UpdateWebhookEndpointInput",
    "WebhookEndpoints",
    "WebhookEndpointsWebhookEndpoints",
    "WebhookEvents",
    "WebhookEventsWebhookEvents",
]
