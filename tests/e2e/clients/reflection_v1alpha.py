"""A client that knows nothing of Tributary's .proto: it learns the services over gRPC server
reflection v1alpha (grpcio-reflection speaks only that version), then calls
ListAvailablePackageSummaries with a dynamically built request.

Usage: reflection_v1alpha.py HOST:PORT PAGE_SIZE
Prints one JSON object: {"services": [...], "keys": ["name@source/identifier", ...], "next_page_token": "..."}
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    address, page_size = sys.argv[1], int(sys.argv[2])
    channel = grpc.insecure_channel(address)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("tributary.v1.PackagesService").FindMethodByName(
        "ListAvailablePackageSummaries"
    )
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/tributary.v1.PackagesService/ListAvailablePackageSummaries",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = call(request_class(page_size=page_size), timeout=30)
    keys = [
        "%s@%s/%s"
        % (s.name, s.available_package_ref.source, s.available_package_ref.identifier)
        for s in response.available_package_summaries
    ]
    print(
        json.dumps(
            {
                "services": services,
                "keys": keys,
                "next_page_token": response.next_page_token,
            }
        )
    )


if __name__ == "__main__":
    main()
